"""Shared fixtures: tiny and e5-small-shaped random BERTs, the real MiniLM from ../shared, and their exports.

Models with random weights come from a fixed seed. The e5-small-shaped BERT has e5-small's exact
configuration (12 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522, 512 positions) and the
uncased WordPiece tokenizer of ../shared/models/all-MiniLM-L6-v2. Tests needing ../shared skip without it.
"""

import os
import shutil
from pathlib import Path

import pytest

from e5onnx.config import shared_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir()  # $E5ONNX_SHARED, else ../shared
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
STSB_TEST = SHARED / "data" / "stsb" / "sts-test.tsv"
MSMARCO = SHARED / "data" / "msmarco_examples.jsonl"
SCIFACT = SHARED / "data" / "scifact"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

requires_shared = pytest.mark.skipif(
    not (MINILM / "model.safetensors").is_file(),
    reason=f"{MINILM} is absent (a fresh clone has no ../shared): real MiniLM weights and tokenizer needed",
)

#: e5-small's config.json (https://huggingface.co/intfloat/e5-small), architecture fields.
E5_SMALL_CONFIG = dict(
    vocab_size=30522, hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)

TINY_WORDS = (
    "the a an of to and is in it for on with as at by what how much protein should female eat summit define "
    "query passage capital france paris city hello world cafe creme brulee robots emoji long text"
).split()


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """Compiled-model caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["E5ONNX_CACHE_DIR"] = str(tmp_path_factory.mktemp("e5onnx-cache"))
    yield


def build_tiny_tokenizer(folder):
    """An uncased BERT WordPiece tokenizer with a small vocabulary, saved in HF layout to ``folder``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-()") + ["東", "京", "é"]
    vocab = specials + chars + ["##" + c for c in chars] + list(TINY_WORDS)
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", do_lower_case=True, model_max_length=128)
    fast.save_pretrained(str(folder))
    return len(vocab)


def build_bert(folder, seed=0, **config):
    """Save a BertModel with random weights from ``seed`` and the given config to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig(**config)).eval().save_pretrained(str(folder), safe_serialization=True)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, hidden-32 random BERT with its own tiny tokenizer: needs nothing from ../shared."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab_size = build_tiny_tokenizer(folder)
    build_bert(folder, vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=128)
    return folder


@pytest.fixture(scope="session")
def e5_shaped_dir(tmp_path_factory):
    """e5-small's exact architecture, random weights (seed 0), MiniLM's uncased WordPiece tokenizer."""
    if not (MINILM / "tokenizer.json").is_file():
        pytest.skip(f"{MINILM} is absent: the e5-small-shaped fixture uses its tokenizer")
    folder = tmp_path_factory.mktemp("e5-small-shaped")
    build_bert(folder, seed=0, **E5_SMALL_CONFIG)
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def xlmr_tokenizer_dir(tmp_path_factory):
    """An XLM-RoBERTa-style SentencePiece Unigram tokenizer trained here (tests/family_models.py), loaded by
    transformers as ``XLMRobertaTokenizerFast``: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3."""
    from family_models import build_xlmr_tokenizer

    folder = tmp_path_factory.mktemp("xlmr-tokenizer")
    build_xlmr_tokenizer(folder)
    return folder


def _export(tmp_path_factory, source, name, **kwargs):
    from e5onnx.export import export_model

    out = tmp_path_factory.mktemp(name + "-parent") / name
    export_model(str(source), out, **kwargs)
    return out


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_bert_dir):
    """The tiny BERT exported with every variant (fp32, optimized O2, int8), max length 128, default tolerances."""
    return _export(tmp_path_factory, tiny_bert_dir, "tiny-onnx", optimize="O2", quantize="int8",
                   max_length=128)


@pytest.fixture(scope="session")
def e5_export(tmp_path_factory, e5_shaped_dir):
    """The e5-small-shaped BERT exported with every variant, max length 512, default tolerances."""
    return _export(tmp_path_factory, e5_shaped_dir, "e5-shaped-onnx", optimize="O2", quantize="int8")


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory):
    """The real all-MiniLM-L6-v2 from ../shared exported with every variant and the default tolerances."""
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip(f"{MINILM} is absent (a fresh clone has no ../shared)")
    from e5onnx.runtime.openvino_session import openvino_available

    return _export(tmp_path_factory, MINILM, "minilm-onnx", optimize="O2", quantize="int8", bf16=openvino_available())


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray of 2 CPUs (no dashboard, no usage stats, 256 MB object store), started the first time a test asks
    for it and shut down at the end of the session; skips without Ray. Yields the ``ray`` module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'e5onnx[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():  # someone else's Ray: use it, leave it running
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny512_export(tmp_path_factory):
    """A 2-layer, hidden-32 random BERT with 512 positions (lengths 1-512 as e5-small) and the tiny tokenizer,
    fp32 + int8: the server tests' model."""
    src = tmp_path_factory.mktemp("tiny512-bert")
    vocab_size = build_tiny_tokenizer(src)
    build_bert(src, seed=1, vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512)
    return _export(tmp_path_factory, src, "tiny512", quantize="int8", max_length=512)
