"""The INT8 recipe: the ONNX graph computes what the NumPy model of the recipe says, is batch-invariant,
and the export's gate keeps the most sensitive MatMuls in fp32 when it is missed."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from e5onnx.config import MANIFEST_FILE, ParityTolerances
from e5onnx.errors import ExportError
from e5onnx.export import export_model, int8, int8_gate
from e5onnx.runtime import Embedder
from e5onnx.runtime.cpu import cpu_kind, int8_saturates
from e5onnx.runtime.embedder import choose_variant


def _one_matmul(path, w, b, opset=18):
    """A graph ``y = x @ w + b`` with x ``(batch, seq, K)`` float32, as optimum writes BERT's Linear layers."""
    k, n = w.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"], name="/layer/dense/MatMul"),
             helper.make_node("Add", ["b", "xw"], ["y"], name="/layer/dense/Add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [14, 18])
@pytest.mark.parametrize("weight_max", [127, 63])
def test_graph_computes_the_recipe(tmp_path, opset, weight_max):
    rng = np.random.default_rng(0)
    k, n = 48, 40
    w = rng.normal(0, 0.1, (k, n)).astype(np.float32)
    b = rng.normal(0, 0.1, n).astype(np.float32)
    x = rng.normal(0, 1, (3, 7, k)).astype(np.float32)
    x[..., 5] *= 25  # an outlier channel, as BERT's LayerNorm outputs have
    x[1, 2] = 0.0    # an all-zero token: scale floor, no NaN
    _one_matmul(tmp_path / "f.onnx", w, b, opset)
    ranges = {"x": np.abs(x).max(axis=(0, 1))}
    settings = int8.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", ranges, weight_max=weight_max)
    assert settings["matmuls_quantized"] == ["/layer/dense/MatMul"] and settings["reduce_range"] == (weight_max < 127)
    got = _run(tmp_path / "q.onnx", x)
    s = int8.smoothing_scales(ranges["x"], np.abs(w).max(axis=1))
    want = int8.simulate(x.reshape(-1, k), w, s, weight_max).reshape(3, 7, n) + b
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the graph is the NumPy recipe
    assert np.abs(got[1, 2] - b).max() < 1e-6  # zero token -> bias only
    err = np.linalg.norm(got - (x @ w + b)) / np.linalg.norm(x @ w + b)
    assert err < (0.02 if weight_max == 127 else 0.04)  # and it is close to fp32
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert [t.data_type for t in model.graph.initializer if t.name.endswith("/weight")] == [TensorProto.INT8]
    assert int(np.abs(numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name.endswith("/weight")))).max()) == weight_max


def test_each_token_is_quantised_alone(tmp_path):
    """Per-token scales: a row's output does not depend on the other rows of the batch (exact)."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (32, 16)).astype(np.float32)
    _one_matmul(tmp_path / "f.onnx", w, np.zeros(16, np.float32))
    x = rng.normal(0, 1, (4, 5, 32)).astype(np.float32)
    int8.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {"x": np.abs(x).max(axis=(0, 1))})
    alone = _run(tmp_path / "q.onnx", x[:1, :2])
    mates = x.copy()
    mates[1:] *= 100  # loud batch-mates would change a per-tensor scale
    assert np.array_equal(_run(tmp_path / "q.onnx", mates)[:1, :2], alone)


def test_keep_and_unknown_names(tmp_path):
    w = np.eye(8, dtype=np.float32)
    _one_matmul(tmp_path / "f.onnx", w, np.zeros(8, np.float32))
    settings = int8.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {"x": np.ones(8, np.float32)},
                             keep=["/layer/dense/MatMul"])
    assert settings["matmuls_kept_fp32"] == ["/layer/dense/MatMul"] and settings["matmuls_quantized"] == []
    assert [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node] == ["MatMul", "Add"]
    with pytest.raises(ExportError, match="not weight MatMuls"):
        int8.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {}, keep=["nope"])
    with pytest.raises(ExportError, match="no calibration range"):
        int8.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {})


def test_cpu_kind_rules():
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2", "avx512bw", "avx512_vnni", "amx_int8"]}) == "amx"
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2", "avx512bw", "avx512_vnni"]}) == "avx512_vnni"
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2", "avx_vnni"]}) == "avx_vnni"
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2"]}) == "avx2"
    assert cpu_kind({"machine": "aarch64", "flags": ["asimd", "asimddp"]}) == "arm64_dot"
    assert cpu_kind({"machine": "x86_64", "flags": []}) == "other"
    assert int8_saturates("avx2") and not int8_saturates("avx512_vnni") and not int8_saturates("arm64_dot")


def test_export_records_the_gate(e5_export):
    manifest = json.loads((e5_export / MANIFEST_FILE).read_text())
    q = manifest["variants"]["int8"]["quantization"]
    assert q["name"] == "smoothquant-per-token" and q["cpu_kind"] == cpu_kind()
    assert q["gate"]["passed"] and q["gate"]["batch_invariance_min_cosine"] >= 0.9999
    assert q["gate"]["min_cosine"] >= ParityTolerances().int8_min_cosine
    assert q["calibration"]["source"] == "built-in" and q["calibration"]["validation_texts"] >= 100
    assert len(q["matmuls_quantized"]) == 12 * 6 and q["matmuls_kept_fp32"] == []  # every Linear of 12 layers
    assert list(q["sensitivity"].values()) == sorted(q["sensitivity"].values(), reverse=True)
    assert manifest["variants"]["int8"]["parity"]["single_vs_batch_max_abs_diff"] < 1e-5


def test_int8_is_batch_invariant(e5_export):
    texts = [f"passage: text number {i} " + "word " * (i * 7 % 90) for i in range(32)]
    embedder = Embedder.load(e5_export, variant="int8", threads=1)
    batched = embedder.embed(texts, batch_size=32)
    alone = np.concatenate([embedder.embed([t]) for t in texts[:6]])
    assert np.sum(alone * batched[:6], axis=1).min() >= 0.9999


def test_auto_prefers_gated_int8_on_the_same_cpu_kind(e5_export):
    manifest = json.loads((e5_export / MANIFEST_FILE).read_text())
    assert choose_variant(manifest, "auto") == "int8"
    assert Embedder.load(e5_export, threads=1).variant == "int8"
    assert choose_variant(manifest, "auto", kind="arm64") == "optimized"  # gated on another CPU kind
    manifest["variants"]["int8"]["quantization"]["gate"]["passed"] = False
    assert choose_variant(manifest, "auto") == "optimized"
    del manifest["variants"]["optimized"]
    assert choose_variant(manifest, "auto") == "fp32"


def test_gate_miss_keeps_the_most_sensitive_matmuls(tmp_path, tiny_bert_dir, monkeypatch):
    misses = iter([["forced miss"], ["forced miss"]])
    monkeypatch.setattr(int8_gate, "judge", lambda figures, tolerances: next(misses, []))
    manifest = export_model(str(tiny_bert_dir), tmp_path / "m", quantize="int8", max_length=128)
    q = manifest["variants"]["int8"]["quantization"]
    assert q["matmuls_kept_fp32"] == list(q["sensitivity"])[:2]  # the two largest errors, in order
    assert [len(a["kept_fp32"]) for a in q["gate"]["attempts"]] == [0, 1, 2]
    kept = {n.name for n in onnx.load(str(tmp_path / "m" / "model_int8.onnx")).graph.node if n.op_type == "MatMul"}
    assert set(q["matmuls_kept_fp32"]) <= kept


def test_gate_miss_fails_the_export_and_leaves_nothing(tmp_path, tiny_bert_dir):
    with pytest.raises(ExportError, match="INT8 quality gate missed") as info:
        export_model(str(tiny_bert_dir), tmp_path / "m", quantize="int8", max_length=128,
                     tolerances=ParityTolerances(int8_min_cosine=1.0, int8_mean_cosine=1.0))
    assert "min cosine" in str(info.value) and "--int8-min-cosine" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_user_calibration_file(tmp_path, tiny_bert_dir):
    texts = tmp_path / "calib.txt"
    texts.write_text("\n".join(f"query: question {i} about things" for i in range(20)) + "\n", encoding="utf-8")
    manifest = export_model(str(tiny_bert_dir), tmp_path / "m", quantize="int8", max_length=128, calibration=texts)
    calib = manifest["variants"]["int8"]["quantization"]["calibration"]
    assert calib["source"] == str(texts) and calib["calibration_texts"] == calib["validation_texts"] == 10
    few = tmp_path / "few.txt"
    few.write_text("one\ntwo\n\n \n", encoding="utf-8")
    with pytest.raises(ExportError, match="has 2 non-empty texts; at least 8"):
        export_model(str(tiny_bert_dir), tmp_path / "m2", quantize="int8", max_length=128, calibration=few)
    with pytest.raises(ExportError, match="only used with --quantize"):
        export_model(str(tiny_bert_dir), tmp_path / "m3", max_length=128, calibration=texts)
    with pytest.raises(ExportError, match="not a readable file"):
        export_model(str(tiny_bert_dir), tmp_path / "m4", quantize="int8", max_length=128,
                     calibration=tmp_path / "missing.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "few.txt", "m"]
