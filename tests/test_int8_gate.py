"""The INT8 quality gate of :func:`e5onnx.export.int8_gate.build_int8` on small hand-built encoders.

Each encoder is ``last_hidden_state = (...((E[input_ids] W0 + b0) W1 + b1) ...)`` with ``n`` weight MatMuls,
so the gate's edge cases run in a fraction of a second without torch: a candidate that is not batch-invariant,
the limit of a quarter of the GEMMs kept in fp32, and graphs with fewer than 4 GEMMs (where that quarter
rounds down to 0 or 1). The tokenizer is the tiny one of ``tiny_bert_dir`` (tests/conftest.py).
"""

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from e5onnx.config import ParityTolerances
from e5onnx.errors import ExportError
from e5onnx.export import int8_gate, int8_graph
from e5onnx.runtime import Embedder
from e5onnx.runtime.cpu import cpu_kind

DIM = 16


def linear_encoder(path, vocab, gemms, seed=0):
    """Save a ``(batch, seq) int64 -> (batch, seq, DIM) float32`` encoder of ``gemms`` weight MatMuls to ``path``
    (named ``/layer<i>/MatMul``); with 0 the output is the embedding lookup itself."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (vocab, DIM)).astype(np.float32), "emb")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h0"], name="embed")]
    for i in range(gemms):
        out = "last_hidden_state" if i == gemms - 1 else f"h{i + 1}"
        inits += [numpy_helper.from_array(rng.normal(0, DIM ** -0.5, (DIM, DIM)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, DIM).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"], name=f"/layer{i}/MatMul"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [out], name=f"/layer{i}/Add")]
    if gemms == 0:
        nodes.append(helper.make_node("Identity", ["h0"], ["last_hidden_state"], name="out"))
    ids = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
           for name in ("input_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "encoder", ids, [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", DIM])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return tiny_bert_dir / "tokenizer.json"


@pytest.fixture
def encoder(tmp_path, tokenizer):
    """``encoder(gemms)``: the path of a fresh :func:`linear_encoder` in ``tmp_path``."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size(with_added_tokens=True)
    return lambda gemms: linear_encoder(tmp_path / f"fp32-{gemms}.onnx", vocab, gemms)


def build(fp32, tokenizer, tolerances=None):
    """:func:`~e5onnx.export.int8_gate.build_int8` of ``fp32`` into ``int8.onnx`` beside it, one thread;
    ``tolerances`` default to the default gate."""
    return int8_gate.build_int8(fp32, fp32.parent / "int8.onnx", tokenizer, max_length=128, pad_token_id=0,
                                tolerances=tolerances or ParityTolerances(), threads=1)


@pytest.fixture
def quantize_calls(monkeypatch):
    """The ``keep`` list of every :func:`~e5onnx.export.int8_graph.quantize` call the gate makes."""
    calls, real = [], int8_graph.quantize
    monkeypatch.setattr(int8_graph, "quantize", lambda *a, keep=(), **k: calls.append(list(keep)) or real(
        *a, keep=keep, **k))
    return calls


def test_judge_names_each_failed_leg_and_its_flag():
    tolerances = ParityTolerances()  # 0.999 / 0.995 / 0.9999
    good = {"mean_cosine": 0.9995, "min_cosine": 0.996, "batch_invariance_min_cosine": 0.99995}
    assert int8_gate.judge(good, tolerances) == []
    assert int8_gate.judge({**good, "batch_invariance_min_cosine": 0.9998}, tolerances) == [
        "batch invariance min cosine 0.999800 < 0.9999 (--int8-batch-cosine)"]
    assert int8_gate.judge({"mean_cosine": 0.99, "min_cosine": 0.9, "batch_invariance_min_cosine": 1.0},
                           tolerances) == ["mean cosine 0.990000 < 0.999 (--int8-mean-cosine)",
                                           "min cosine 0.900000 < 0.995 (--int8-min-cosine)"]


def test_batch_variant_candidate_is_refused(encoder, tokenizer, monkeypatch):
    """onnxruntime's own dynamic quantisation takes one activation scale per tensor (the whole padded batch),
    so a text's vector moves with its batch-mates: close to fp32 on average, but not batch-invariant. The gate
    must refuse it for that reason alone, after sweeping the GEMMs it may keep in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def per_tensor(src, dst, ranges, *, keep=(), **kwargs):
        quantize_dynamic(str(src), str(dst), nodes_to_exclude=list(keep), weight_type=QuantType.QInt8)
        return {}

    figures, judge = [], int8_gate.judge
    monkeypatch.setattr(int8_graph, "quantize", per_tensor)
    monkeypatch.setattr(int8_gate, "judge", lambda measured, tol: figures.append(measured) or judge(measured, tol))
    # measured here (AVX-512 VNNI), 0 / 1 / 2 GEMMs in fp32: mean cosine 0.99983-0.99986, min 0.99845-0.99905,
    # invariance 0.99961-0.99978; the default gate (0.999 / 0.995 / 0.9999) would refuse for invariance alone.
    # Mean and min are loosened so that on CPU kinds whose kernels saturate, too, only invariance can fail.
    tolerances = ParityTolerances(int8_mean_cosine=0.99, int8_min_cosine=0.98)
    with pytest.raises(ExportError, match="INT8 quality gate missed with 2 of 8 MatMuls kept in fp32") as info:
        build(encoder(8), tokenizer, tolerances)
    assert len(figures) == len(int8_gate.weight_forms(cpu_kind())) + 2  # the last form swept to 2 in fp32
    for measured in figures:
        assert measured["mean_cosine"] >= 0.99 and measured["min_cosine"] >= 0.98, measured
        assert measured["batch_invariance_min_cosine"] < 0.9999, measured
    message = str(info.value)
    assert "batch invariance min cosine 0.99" in message and "< 0.9999 (--int8-batch-cosine)" in message
    assert not re.search(r"(?<!invariance )min cosine|mean cosine", message)  # the only failure named


@pytest.mark.parametrize("gemms, limit", [(8, 2), (7, 1), (4, 1), (3, 0), (1, 0)])
def test_at_most_a_quarter_of_the_gemms_are_kept_in_fp32(encoder, tokenizer, quantize_calls, monkeypatch,
                                                          gemms, limit):
    """The gate keeps GEMMs in fp32, most sensitive first, until ``int(gemms * 0.25)`` are; then it gives up.
    Under 4 GEMMs that quarter is 0: a miss fails the export without keeping any (documented in int8_gate)."""
    monkeypatch.setattr(int8_gate, "judge", lambda figures, tolerances: ["forced miss"])
    with pytest.raises(ExportError, match=f"missed with {limit} of {gemms} MatMuls kept in fp32"):
        build(encoder(gemms), tokenizer)
    forms = len(int8_gate.weight_forms(cpu_kind()))  # every form but the last is tried once, nothing kept
    assert quantize_calls[:forms - 1] == [[]] * (forms - 1)
    sweep = quantize_calls[forms - 1:]
    assert [len(keep) for keep in sweep] == list(range(limit + 1))
    for shorter, longer in zip(sweep, sweep[1:]):  # each step keeps one more, the earlier ones stay
        assert longer[:-1] == shorter and longer[-1] in {f"/layer{i}/MatMul" for i in range(gemms)}


@pytest.mark.parametrize("gemms", [1, 3])
def test_graph_with_fewer_than_four_gemms_is_quantised_whole(encoder, tokenizer, gemms):
    fp32 = encoder(gemms)
    settings = build(fp32, tokenizer)
    assert settings["matmuls_quantized"] == [f"/layer{i}/MatMul" for i in range(gemms)]
    assert settings["matmuls_kept_fp32"] == [] and settings["gate"]["passed"] is True
    assert [a["kept_fp32"] for a in settings["gate"]["attempts"]] == [[]]  # passed at the first form
    ops = [n.op_type for n in onnx.load(str(fp32.parent / "int8.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") == gemms and "MatMul" not in ops
    texts = ["hello world", "paris is the capital of france", ""]
    got = Embedder(fp32.parent / "int8.onnx", tokenizer, max_length=128, threads=1, variant="int8").embed(texts)
    want = Embedder(fp32, tokenizer, max_length=128, threads=1).embed(texts)
    assert np.sum(got * want, axis=1).min() > 0.999


def test_graph_without_weight_gemms_is_a_clear_error(encoder, tokenizer):
    with pytest.raises(ExportError, match="has no weight MatMul .* to quantise"):  # nothing to quantise: it says so
        build(encoder(0), tokenizer)
