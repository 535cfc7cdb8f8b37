"""A model e5onnx cannot serve correctly is refused at export, before any work, with the reason; the model facts the
export uses (max length, position limit) come from the model's own config and tokenizer."""

import json

import pytest
from conftest import build_tiny_tokenizer
from family_models import CONFIGS, write_sentence_transformers_files

from e5onnx.errors import ExportError
from e5onnx.export import export_model
from e5onnx.export.support import check_supported, default_max_length, position_limit

BERT = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 200, "hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tiny_tokenizer(folder)
    return folder


def _folder(root, tokenizer_dir, config=None, tokenizer=True, pooling=None, modules=None):
    """A source folder as the export finds it: config.json, a (dummy) weights file, the tiny WordPiece tokenizer, and
    the sentence-transformers files of an e5 repo, with ``pooling`` merged into 1_Pooling/config.json and
    ``modules`` (a list of module type names) as modules.json."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps(BERT if config is None else config), encoding="utf-8")
    (root / "model.safetensors").write_bytes(b"never read: the model is refused first")
    if tokenizer:
        for f in tokenizer_dir.iterdir():
            (root / f.name).write_bytes(f.read_bytes())
    write_sentence_transformers_files(root, 32)
    if pooling is not None:
        path = root / "1_Pooling" / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **pooling}), encoding="utf-8")
    if modules is not None:
        (root / "modules.json").write_text(json.dumps([{"idx": i, "name": str(i), "path": "1_Pooling" if t == "Pooling"
                                                        else "", "type": f"sentence_transformers.models.{t}"}
                                                       for i, t in enumerate(modules)]), encoding="utf-8")
    return root


def _refused(tmp_path, source, match):
    with pytest.raises(ExportError, match=match) as info:
        export_model(str(source), tmp_path / "out", max_length=32)
    assert str(info.value).startswith("refusing to export: ")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return str(info.value)


@pytest.mark.parametrize("config, match", [
    ({**BERT, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
     r"model_type 'gpt2' is not an encoder e5onnx supports \(bert, xlm-roberta\)"),
    ({**BERT, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "model_type 'llama'"),
    ({**BERT, "is_decoder": True}, r"this is a decoder \(is_decoder / add_cross_attention set in config.json\)"),
    ({**BERT, "architectures": ["BertLMHeadModel"]}, r"decoder \(architectures \['BertLMHeadModel'\]\)"),
    ({**BERT, "model_type": "xlm-roberta", "architectures": ["XLMRobertaForCausalLM"]}, "decoder"),
    ({k: v for k, v in BERT.items() if k != "model_type"}, "model_type None"),
])
def test_decoders_and_other_architectures_are_refused(tmp_path, tokenizer_dir, config, match):
    message = _refused(tmp_path, _folder(tmp_path / "src", tokenizer_dir, config), match)
    assert "e5onnx serves BERT and XLM-RoBERTa encoders" in message


@pytest.mark.parametrize("pooling, match", [
    ({"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}, "pools with cls, not masked mean"),
    ({"pooling_mode_max_tokens": True}, "pools with max \\+ mean"),  # sentence-transformers' order
    ({"pooling_mode": "lasttoken"}, "pools with lasttoken"),
    ({"pooling_mode": ["mean", "cls"]}, "pools with mean \\+ cls"),
    ({"include_prompt": False}, "leaves the prompt tokens out of the mean"),
])
def test_pooling_other_than_mean_is_refused(tmp_path, tokenizer_dir, pooling, match):
    message = _refused(tmp_path, _folder(tmp_path / "src", tokenizer_dir, pooling=pooling), match)
    assert "1_Pooling/config.json" in message


@pytest.mark.parametrize("modules, match", [
    (["Transformer", "Pooling", "Dense", "Normalize"], r"has \['Dense'\] modules, which change the vectors"),
    (["Transformer", "Normalize"], "has no Pooling module"),
])
def test_sentence_transformers_pipelines_other_than_mean_pooling_are_refused(tmp_path, tokenizer_dir, modules, match):
    _refused(tmp_path, _folder(tmp_path / "src", tokenizer_dir, modules=modules), match)


def test_no_tokenizer_is_refused(tmp_path, tokenizer_dir):
    _refused(tmp_path, _folder(tmp_path / "src", tokenizer_dir, tokenizer=False), "holds no tokenizer")


def test_a_slow_only_tokenizer_is_refused(tmp_path, tokenizer_dir):
    src = _folder(tmp_path / "src", tokenizer_dir, tokenizer=False)
    (src / "vocab.json").write_text(json.dumps({"hello": 0, "world": 1, "UNK": 2}), encoding="utf-8")
    (src / "merges.txt").write_text("#version: 0.2\nh e\n", encoding="utf-8")
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CTRLTokenizer"}), encoding="utf-8")
    _refused(tmp_path, src, r"its tokenizer \(CTRLTokenizer\) has no fast .* there is no tokenizer.json and "
                            "transformers cannot convert it")


def test_a_slow_tokenizer_transformers_can_convert_is_accepted(tmp_path, tokenizer_dir):
    src = _folder(tmp_path / "src", tokenizer_dir)
    (src / "tokenizer.json").unlink()  # vocab.txt + tokenizer_config.json: converted to BertTokenizerFast
    assert check_supported(src, BERT)["tokenizer"]["class"] == "BertTokenizerFast"


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path, tokenizer_dir):
    src = _folder(tmp_path / "src", tokenizer_dir, {**BERT, "vocab_size": 50})
    _refused(tmp_path, src, r"its tokenizer has \d+ token ids but the model's vocab_size is 50")


def test_the_e5_layout_is_accepted_and_described(tmp_path, tokenizer_dir):
    src = _folder(tmp_path / "src", tokenizer_dir)
    facts = check_supported(src, BERT)
    assert facts["model_type"] == "bert" and facts["pooling_config"] == "1_Pooling/config.json"
    assert facts["tokenizer"]["class"] == "BertTokenizerFast" and facts["tokenizer"]["pad_token_id"] == 0
    assert facts["tokenizer"]["special_tokens"]["cls_token"] == 2 and facts["tokenizer"]["model_max_length"] == 128
    for name in ("modules.json", "1_Pooling/config.json"):  # a plain HF folder: mean pooling, the e5 recipe
        (src / name).unlink()
    assert check_supported(src, BERT)["pooling_config"] == "default (no sentence-transformers modules)"


def test_position_limit_and_default_max_length_come_from_the_model(tmp_path):
    xlmr, bert = CONFIGS["multilingual-e5-base"], CONFIGS["e5-base-v2"]
    assert position_limit(xlmr) == 512 and position_limit(bert) == 512  # 514 - pad id 1 - 1
    assert position_limit({**xlmr, "max_position_embeddings": 130}) == 128 and position_limit({}) is None
    assert default_max_length(tmp_path, xlmr) == default_max_length(tmp_path, bert) == 512
    assert default_max_length(tmp_path, bert, tokenizer_max_length=128) == 128  # the tokenizer's own limit
    assert default_max_length(tmp_path, bert, tokenizer_max_length=None) == 512
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}), encoding="utf-8")
    assert default_max_length(tmp_path, xlmr) == 256  # sentence-transformers' max_seq_length (all-MiniLM's)
    assert default_max_length(tmp_path / "none", {}) == 512  # nothing known: config.MAX_LENGTH


def test_max_length_over_xlm_robertas_positions_is_refused(tmp_path, xlmr_tokenizer_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(CONFIGS["multilingual-e5-base"]), encoding="utf-8")
    (src / "model.safetensors").write_bytes(b"never read")
    for f in xlmr_tokenizer_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ExportError, match=r"--max-length 513 is over the 512 tokens the model's position table "
                                          r"holds \(max_position_embeddings 514 less XLM-RoBERTa's offset"):
        export_model(str(src), tmp_path / "out", max_length=513)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
