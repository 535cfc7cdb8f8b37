"""Random-weight stand-ins for the e5 family, at the exact configurations of the published models.

Used by tests/test_family.py and benchmarks/family.py. Each config below is the model's ``config.json`` on the
Hugging Face Hub (architecture fields; dropout and init fields as published), copied by hand because the Hub is
out of reach here:

- ``e5-small-v2``  https://huggingface.co/intfloat/e5-small-v2/blob/main/config.json (= e5-small's, bert-small)
- ``e5-base-v2``   https://huggingface.co/intfloat/e5-base-v2/blob/main/config.json (bert-base-uncased's shape)
- ``e5-large-v2``  https://huggingface.co/intfloat/e5-large-v2/blob/main/config.json (bert-large-uncased's shape)
- ``multilingual-e5-small`` https://huggingface.co/intfloat/multilingual-e5-small/blob/main/config.json: a
  **BERT** (``BertModel``, from microsoft/Multilingual-MiniLM-L12-H384) with XLM-RoBERTa's SentencePiece
  tokenizer (``tokenizer_class`` XLMRobertaTokenizer): vocab 250,037, 512 positions, ``token_type_ids`` input,
  while the tokenizer pads with ``<pad>`` = 1.
- ``multilingual-e5-base`` https://huggingface.co/intfloat/multilingual-e5-base/blob/main/config.json: an
  **XLM-RoBERTa** (``XLMRobertaModel``, from xlm-roberta-base): vocab 250,002, 514 positions (512 tokens: they
  start after the pad id 1), one token type and no ``token_type_ids`` graph input, LayerNorm eps 1e-5.

Tokenizers: the BERT models use uncased WordPiece (bert-base-uncased's vocabulary, 30,522), the one in
../shared/models/all-MiniLM-L6-v2; the multilingual models a small SentencePiece Unigram trained here by
:func:`build_xlmr_tokenizer` with XLM-RoBERTa's special tokens and post-processor, saved so that transformers'
``AutoTokenizer`` loads it as ``XLMRobertaTokenizerFast``.
"""

import json
import shutil
from pathlib import Path

_BERT = dict(architectures=["BertModel"], model_type="bert", attention_probs_dropout_prob=0.1, hidden_act="gelu",
             hidden_dropout_prob=0.1, initializer_range=0.02, layer_norm_eps=1e-12, max_position_embeddings=512,
             pad_token_id=0, position_embedding_type="absolute", type_vocab_size=2)

#: name -> config.json fields of the published model (see the module doc for the sources).
CONFIGS = {
    "e5-small-v2": dict(_BERT, vocab_size=30522, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=1536),
    "e5-base-v2": dict(_BERT, vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072),
    "e5-large-v2": dict(_BERT, vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096),
    "multilingual-e5-small": dict(_BERT, vocab_size=250037, hidden_size=384, num_hidden_layers=12,
                                  num_attention_heads=12, intermediate_size=1536,
                                  tokenizer_class="XLMRobertaTokenizer"),
    "multilingual-e5-base": dict(architectures=["XLMRobertaModel"], model_type="xlm-roberta",
                                 attention_probs_dropout_prob=0.1, bos_token_id=0, eos_token_id=2, hidden_act="gelu",
                                 hidden_dropout_prob=0.1, hidden_size=768, initializer_range=0.02,
                                 intermediate_size=3072, layer_norm_eps=1e-05, max_position_embeddings=514,
                                 num_attention_heads=12, num_hidden_layers=12, pad_token_id=1,
                                 position_embedding_type="absolute", type_vocab_size=1, vocab_size=250002),
}
MULTILINGUAL = ("multilingual-e5-small", "multilingual-e5-base")
#: XLM-RoBERTa's special tokens and ids (<mask> is the last id of the real vocabulary, 250001).
XLMR_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
#: Tokenizer files copied into a model folder (those present: the Unigram one has no vocab.txt).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

#: Texts the tests check token ids and vectors on: Latin, accents, CJK, Cyrillic, Arabic, Greek, Hebrew, Devanagari,
#: emoji, combining marks, runs of spaces, and a text far over 512 tokens.
MULTILINGUAL_TEXTS = [
    "query: how much protein should a female eat",
    "passage: Crème brûlée, façade, naïve, Ångström, Œuvre, São Paulo, Zürich, Łódź",
    "passage: 東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "query: Привет, мир! Москва — столица России.",
    "passage: مرحبا بالعالم، هذه جملة باللغة العربية",
    "query: Γειά σου Κόσμε — שלום עולם — नमस्ते दुनिया",
    "query: 🤖 robots ❤️ emoji 🎉 👩‍👩‍👧 flags 🇫🇷",
    "passage: e\u0301te\u0301 zero\u200bwidth\u00a0nbsp   three  spaces\ttab\nnewline",
    "",
    "passage: " + " ".join(["Der schnelle braune Fuchs springt über den faulen Hund; el zorro salta 東京 мир."] * 80),
]

#: Text the XLM-RoBERTa-style Unigram is trained on, with the calibration texts (a few sentences per script).
_TRAINING = [
    "query: how much protein should a female eat", "passage: Paris is the capital and most populous city of France.",
    "The mitochondrion is an organelle found in the cells of most eukaryotes.", "summit define meeting leaders",
    "Crème brûlée, façade, naïve, Ångström, Œuvre, São Paulo, Zürich, Łódź, Kraków, Málaga, Göteborg",
    "Der schnelle braune Fuchs springt über den faulen Hund.", "El rápido zorro marrón salta sobre el perro perezoso.",
    "Le renard brun rapide saute par-dessus le chien paresseux.", "東京は日本の首都です。北京是中国的首都。",
    "서울은 한국의 수도입니다.", "Привет, мир! Как дела? Москва — столица России.", "Γειά σου Κόσμε, καλημέρα",
    "مرحبا بالعالم، هذه جملة باللغة العربية", "שלום עולם", "नमस्ते दुनिया, यह एक वाक्य है", "🤖 ❤️ 🎉",
    "0123456789 .,:;!?'\"-()[]{}@#$%&*/+=<>", "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz",
]


def calibration_texts():
    """The INT8 export's built-in calibration texts (240, mixed languages and kinds), as a list of str."""
    from importlib import resources

    raw = resources.files("e5onnx.export").joinpath("calibration.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]


def build_xlmr_tokenizer(folder, vocab_size=2000):
    """Train a SentencePiece-style Unigram tokenizer with XLM-RoBERTa's layout and save it to ``folder``.

    NFKC, runs of spaces collapsed, Metaspace (``▁``, prepended, split at spaces), ``<s> $A </s>`` (pairs
    ``<s> A </s> </s> B </s>``), specials ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3 and ``<mask>`` last —
    the real XLM-RoBERTa tokenizer.json's form (its normaliser is a precompiled NFKC-like charsmap).

    Returns:
        int: the number of token ids.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer
    from transformers import XLMRobertaTokenizerFast

    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=list(XLMR_SPECIALS), unk_token="<unk>",
                             show_progress=False)
    tok.train_from_iterator(_TRAINING * 4 + calibration_texts(), trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=512)
    fast.save_pretrained(str(folder))
    return tok.get_vocab_size()


def write_sentence_transformers_files(folder, dim, max_seq_length=512):
    """The e5 repos' sentence-transformers files: modules.json (Transformer, mean Pooling, Normalize),
    1_Pooling/config.json and sentence_bert_config.json."""
    folder = Path(folder)
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
               for i, (path, kind) in enumerate(kinds)]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": dim, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}), encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                  "do_lower_case": False}), encoding="utf-8")


def build_family_model(folder, name, tokenizer_dir, layers=None, seed=0):
    """Save a random-weight model (``seed``) with ``CONFIGS[name]``, the tokenizer files of ``tokenizer_dir`` and
    the e5 repos' sentence-transformers files to ``folder``.

    Args:
        tokenizer_dir: folder whose tokenizer files are copied: the uncased WordPiece for the BERT models,
            :func:`build_xlmr_tokenizer`'s output for the multilingual ones.
        layers: ``num_hidden_layers`` to use instead of the published one (no weight shape changes: every layer
            has the same shapes), or None for the exact config.

    Returns:
        dict: the config used.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(CONFIGS[name])
    if layers is not None:
        config["num_hidden_layers"] = layers
    for file in Path(tokenizer_dir).iterdir():
        if file.name in TOKENIZER_FILES:
            shutil.copy(file, folder / file.name)
    torch.manual_seed(seed)
    fields = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    model = AutoModel.from_config(AutoConfig.for_model(config["model_type"], **fields))
    model.config.architectures = config["architectures"]
    model.eval().save_pretrained(str(folder), safe_serialization=True)
    write_sentence_transformers_files(folder, config["hidden_size"])
    return config
