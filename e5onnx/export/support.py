"""Which Hugging Face models e5onnx can serve correctly, and the facts it takes from each model's own files.

Supported: a BERT (``model_type`` ``"bert"``) or XLM-RoBERTa (``"xlm-roberta"``) encoder whose sentence vector is
the masked mean of ``last_hidden_state`` (the e5 family: ``intfloat/e5-*``, ``intfloat/multilingual-e5-*``), with a
fast (Rust ``tokenizers``) tokenizer. :func:`check_supported` refuses, before any export work, with the reason:

- another ``model_type`` (the exporter, its INT8 recipe and the runtime were built and tested on these two);
- a decoder (``is_decoder``, ``add_cross_attention`` or a causal / seq2seq LM architecture): causal attention,
  and such models pool the last token, not the mean;
- a sentence-transformers pipeline that does not end in masked mean pooling (``modules.json`` / the Pooling
  module's ``config.json``: CLS, max, last-token, weighted-mean pooling, prompt tokens left out, a ``Dense``
  projection after pooling, ...): the vectors would differ from the model's own;
- no fast tokenizer (no ``tokenizer.json``, and transformers cannot convert the slow one), or one whose ids do
  not fit the model's ``vocab_size``.

Model facts (width, layers, heads, vocabulary, positions, pad id, special tokens) come from ``config.json`` and
the tokenizer, never from constants: :func:`position_limit` and :func:`default_max_length`.
"""

import json
from pathlib import Path

from ..config import MAX_LENGTH
from ..errors import ExportError

#: ``config.json`` ``model_type`` values e5onnx exports (BERT; XLM-RoBERTa, whose positions start after the pad id).
SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta")
#: Model types whose position ids start at ``pad_token_id + 1`` (``create_position_ids_from_input_ids`` in
#: transformers' RoBERTa / XLM-RoBERTa code), so ``max_position_embeddings - pad_token_id - 1`` tokens fit.
PADDING_OFFSET_POSITIONS = ("xlm-roberta", "roberta")
#: Architecture name endings of generative models (causal or encoder-decoder language-model heads).
DECODER_ARCHITECTURES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")
#: sentence-transformers module types (last dotted part) that keep masked mean pooling's vectors.
SERVABLE_MODULES = ("Transformer", "Pooling", "Normalize")
#: Legacy sentence-transformers Pooling flags -> mode (``sentence_transformers`` Pooling's ``pooling_mode``).
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
#: Files a Hugging Face tokenizer is loaded or converted from (one is needed; ``tokenizer.json`` is the fast one).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                   "spiece.model", "tokenizer.model")
#: ``model_max_length`` at or above this is transformers' "no limit" placeholder (int(1e30)), not a real limit.
_NO_LIMIT = 10**9


def check_supported(folder, config):
    """Refuse a model e5onnx cannot serve correctly (see the module doc), before any export work.

    Args:
        folder: the local Hugging Face model folder.
        config: its ``config.json`` as a dict.

    Returns:
        dict recorded in the manifest: ``model_type``, ``pooling_config`` (where mean pooling was read from) and
        ``tokenizer`` (class name, vocabulary size, pad / special token ids).

    Raises:
        ExportError: the model is refused; the message says why and what e5onnx serves.
    """
    folder = Path(folder)
    model_type = config.get("model_type")
    _check_encoder(config, model_type)
    pooling = _check_pooling(folder)
    tokenizer = _check_tokenizer(folder, config)
    return {"model_type": model_type, "pooling_config": pooling, "tokenizer": tokenizer}


def _refuse(reason):
    return ExportError(f"refusing to export: {reason}. e5onnx serves BERT and XLM-RoBERTa encoders whose sentence "
                       "vector is the masked mean of last_hidden_state (the e5 family), with a fast tokenizer")


def _check_encoder(config, model_type):
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _refuse(f"config.json model_type {model_type!r} is not an encoder e5onnx supports "
                      f"({', '.join(SUPPORTED_MODEL_TYPES)})")
    causal = [a for a in config.get("architectures") or [] if str(a).endswith(DECODER_ARCHITECTURES)]
    if config.get("is_decoder") or config.get("add_cross_attention") or causal:
        what = f"architectures {causal}" if causal else "is_decoder / add_cross_attention set in config.json"
        raise _refuse(f"this is a decoder ({what}): its attention is causal and its vectors are not mean-pooled")


def _read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _refuse(f"cannot read {str(path)!r}: {exc}") from None


def _pooling_modes(pooling):
    """The modes of a sentence-transformers Pooling ``config.json`` (new ``pooling_mode`` key or legacy flags)."""
    mode = pooling.get("pooling_mode")
    if mode is None:
        modes = tuple(m for key, m in _LEGACY_POOLING.items() if pooling.get(key))
        return modes or ("mean",)  # sentence-transformers' own default
    return (mode,) if isinstance(mode, str) else tuple(mode)


def _check_pooling(folder):
    """Where mean pooling was read from: ``"1_Pooling/config.json"`` or ``"default (no sentence-transformers
    modules)"``."""
    modules_file = folder / "modules.json"
    modules = _read_json(modules_file) if modules_file.is_file() else None
    if modules is not None:
        if not isinstance(modules, list):
            raise _refuse(f"{str(modules_file)!r} is not a list of modules")
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] if isinstance(m, dict) else "?" for m in modules]
        other = [k for k in kinds if k not in SERVABLE_MODULES]
        if other:
            raise _refuse(f"its sentence-transformers pipeline (modules.json) has {other} modules, which change the "
                          "vectors after pooling; e5onnx computes Transformer -> mean Pooling -> Normalize only")
        paths = [m.get("path", "") for m, k in zip(modules, kinds) if k == "Pooling"]
        if not paths:
            raise _refuse("its sentence-transformers pipeline (modules.json) has no Pooling module")
    else:
        paths = ["1_Pooling"] if (folder / "1_Pooling" / "config.json").is_file() else []
    if not paths:
        return "default (no sentence-transformers modules)"
    where = Path(paths[0]) / "config.json"
    pooling = _read_json(folder / where)
    if not isinstance(pooling, dict):
        raise _refuse(f"{where.as_posix()} is not a JSON object")
    modes = _pooling_modes(pooling)
    if modes != ("mean",):
        raise _refuse(f"{where.as_posix()} pools with {' + '.join(modes)}, not masked mean pooling")
    if pooling.get("include_prompt") is False:
        raise _refuse(f"{where.as_posix()} leaves the prompt tokens out of the mean (include_prompt false)")
    return where.as_posix()


def _check_tokenizer(folder, config):
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise _refuse(f"{str(folder)!r} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as exc:  # OSError (no files), ValueError (cannot convert), ImportError (sentencepiece)
        raise _refuse(f"no fast tokenizer could be loaded from {str(folder)!r} ({type(exc).__name__}: "
                      f"{str(exc).strip()[:300]})") from None
    if not tokenizer.is_fast:
        raise _refuse(f"its tokenizer ({type(tokenizer).__name__}) has no fast (Rust tokenizers) version: there "
                      "is no tokenizer.json and transformers cannot convert it")
    ids = len(tokenizer)
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and ids > vocab:
        raise _refuse(f"its tokenizer has {ids} token ids but the model's vocab_size is {vocab}")
    return {"class": type(tokenizer).__name__, "ids": ids, "pad_token_id": tokenizer.pad_token_id,
            "special_tokens": {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
                               tokenizer.special_tokens_map.items() if isinstance(tok, str)},
            "model_max_length": tokenizer.model_max_length if tokenizer.model_max_length < _NO_LIMIT else None}


def position_limit(config):
    """Most tokens per text the model's position table holds, special tokens included: ``max_position_embeddings``
    for BERT, ``max_position_embeddings - pad_token_id - 1`` for XLM-RoBERTa (514 - 2 = 512), or None when the
    config does not say."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    if config.get("model_type") in PADDING_OFFSET_POSITIONS:
        return positions - int(config.get("pad_token_id", 1)) - 1
    return positions


def check_max_length(max_length, config):
    """Raise :class:`~e5onnx.errors.ExportError` when ``max_length`` is over :func:`position_limit`."""
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        positions = config["max_position_embeddings"]
        offset = "" if limit == positions else " less XLM-RoBERTa's offset, pad id + 1"
        raise ExportError(f"--max-length {max_length} is over the {limit} tokens the model's position table holds "
                          f"(max_position_embeddings {positions}{offset})")


def default_max_length(folder, config, tokenizer_max_length=None):
    """Tokens per text when ``--max-length`` is not given: the smallest of the source's sentence-transformers
    ``max_seq_length`` (``sentence_bert_config.json``), the tokenizer's ``model_max_length`` and
    :func:`position_limit`; :data:`~e5onnx.config.MAX_LENGTH` (512) only when none of them is known."""
    limits = [position_limit(config), tokenizer_max_length]
    try:
        limits.append(json.loads((Path(folder) / "sentence_bert_config.json").read_text(encoding="utf-8"))
                      ["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    known = [v for v in limits if isinstance(v, int) and not isinstance(v, bool) and 2 <= v < _NO_LIMIT]
    return min(known) if known else MAX_LENGTH
