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
from e5onnx.export import export_model, int8, int8_gate, int8_graph
from e5onnx.runtime import Embedder
from e5onnx.runtime.cpu import cpu_kind, int8_saturates
from e5onnx.runtime.manifest import Manifest
from e5onnx.runtime.variants import Host


def _one_matmul(path, w, b, opset=18, gelu=False):
    """A graph ``y = x @ w + b`` with x ``(batch, seq, K)`` float32, as optimum writes BERT's Linear layers;
    with ``gelu``, ``x`` first goes through onnxruntime's ``BiasGelu`` (bias 0), as in the fused graph."""
    k, n = w.shape
    nodes = [helper.make_node("MatMul", ["h" if gelu else "x", "w"], ["xw"], name="/layer/dense/MatMul"),
             helper.make_node("Add", ["b", "xw"], ["y"], name="/layer/dense/Add")]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if gelu:
        nodes.insert(0, helper.make_node("BiasGelu", ["x", "zero"], ["h"], name="gelu", domain="com.microsoft"))
        inits.append(numpy_helper.from_array(np.zeros(k, np.float32), "zero"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", n])], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if gelu else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _gelu(x):
    from scipy.special import erf

    return (0.5 * x * (1 + erf(x / np.sqrt(2)))).astype(np.float32)


@pytest.mark.parametrize("opset", [14, 18])
@pytest.mark.parametrize("weight_max,unsigned", [(127, False), (63, False), (127, True)])
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("outliers", [0, 4])
def test_graph_computes_the_recipe(tmp_path, opset, weight_max, unsigned, gelu, outliers):
    if weight_max == 127 and not unsigned and int8_saturates(cpu_kind()):
        pytest.skip(f"int8 weights of 127 saturate the U8S8 kernels of this {cpu_kind()} CPU (pmaddubsw): "
                    "such CPUs get uint8 weights (tested) or 63-level int8")
    rng = np.random.default_rng(0)
    k, n = 48, 40
    w = rng.normal(0, 0.1, (k, n)).astype(np.float32)
    b = rng.normal(0, 0.1, n).astype(np.float32)
    x = rng.normal(0, 1, (3, 7, k)).astype(np.float32)
    x[..., 5] *= 25  # an outlier channel, as BERT's LayerNorm outputs have
    x[1, 2] = 0.0    # an all-zero token: scale floor, no NaN
    _one_matmul(tmp_path / "f.onnx", w, b, opset, gelu)
    h = _gelu(x) if gelu else x  # what the MatMul reads
    ranges = {"h" if gelu else "x": np.abs(h).max(axis=(0, 1))}
    settings = int8_graph.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", ranges, weight_max=weight_max,
                                   unsigned_weights=unsigned, outliers=outliers)
    assert settings["matmuls_quantized"] == ["/layer/dense/MatMul"] and settings["reduce_range"] == (weight_max < 127)
    assert settings["outlier_channels"] == outliers
    got = _run(tmp_path / "q.onnx", x)
    shift = int8.GELU_SHIFT if gelu else 0.0
    x_max = next(iter(ranges.values())) + shift
    s = int8.smoothing_scales(x_max, np.abs(w).max(axis=1))
    # step 6 takes the input of an FFN output projection (a GELU output), not of a plain MatMul
    picked = int8.outlier_channels(x_max, s, outliers if gelu else 0)
    assert len(picked) == (outliers if gelu else 0) and (5 in picked or not len(picked))  # the planted outlier
    want = int8.simulate(h.reshape(-1, k), w, s, weight_max, shift, picked).reshape(3, 7, n) + b
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4)  # the graph is the NumPy recipe (GELU: erf vs scipy)
    if not gelu:
        assert np.abs(got[1, 2] - b).max() < 1e-6  # zero token -> bias only
    err = np.linalg.norm(got - (h @ w + b)) / np.linalg.norm(h @ w + b)
    assert err < (0.02 if weight_max == 127 else 0.04)  # and it is close to fp32
    model = onnx.load(str(tmp_path / "q.onnx"))
    stored = next(t for t in model.graph.initializer if t.name.endswith("/weight"))
    assert stored.data_type == (TensorProto.UINT8 if unsigned else TensorProto.INT8)
    values = numpy_helper.to_array(stored).astype(int) - (128 if unsigned else 0)
    assert int(np.abs(values).max()) == weight_max
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") == 1 and ("Abs" in ops) != gelu  # shifted GELU output: no Abs needed
    assert ops.count("Gather") == ops.count("MatMul") == (1 if len(picked) else 0)  # the fp32 outlier GEMM


def test_outlier_channels_in_fp32_cut_the_error_of_loud_tokens(tmp_path):
    """Step 6: a token whose channel 5 is 40x its RMS (as BERT's [CLS] / [SEP] tokens are) loses most of its
    int8 levels to that channel; computing the loudest channels in fp32 gives the rest back."""
    rng = np.random.default_rng(3)
    k, n = 64, 32
    w = rng.normal(0, 0.1, (k, n)).astype(np.float32)
    _one_matmul(tmp_path / "f.onnx", w, np.zeros(n, np.float32), gelu=True)  # an FFN output projection
    x = rng.normal(0, 1, (2, 16, k)).astype(np.float32)
    x[:, 0, 5] = 40.0  # one loud token per text
    h = _gelu(x)
    ranges = {"h": np.abs(h).max(axis=(0, 1))}
    errors = {}
    for count in (0, 4):
        int8_graph.quantize(tmp_path / "f.onnx", tmp_path / f"q{count}.onnx", ranges, outliers=count)
        got, want = _run(tmp_path / f"q{count}.onnx", x)[:, 0], (h @ w)[:, 0]
        errors[count] = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert errors[4] < errors[0] / 2, errors  # measured 0.0027 -> 0.0010


def test_sensitivity_ranks_the_gemm_with_spiky_tokens_first(tmp_path):
    """Per-token scales lose most on tokens whose largest channel is far above the rest: a GEMM whose input rows
    each carry one loud channel (40 among N(0, 1) values; a different channel per row, so smoothing cannot take
    it out) has about twice the relative error of one reading plain N(0, 1) rows, and comes first, whatever
    the node order or the names."""
    rng = np.random.default_rng(4)
    k, n = 64, 32
    wa, wz = (rng.normal(0, 0.1, (k, n)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["ya"], name="/a/MatMul"),
             helper.make_node("MatMul", ["y", "wz"], ["yz"], name="/z/MatMul")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["rows", k]) for v in ("x", "y")],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["rows", n]) for v in ("ya", "yz")],
        [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wz, "wz")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "f.onnx"))
    plain, spiky = (rng.normal(0, 1, (512, k)).astype(np.float32) for _ in range(2))
    spiky[np.arange(512), rng.integers(0, k, 512)] = 40.0
    samples = {"x": plain, "y": spiky}
    errors = int8.sensitivity(tmp_path / "f.onnx", {x: np.abs(v).max(axis=0) for x, v in samples.items()}, samples)
    assert list(errors) == ["/z/MatMul", "/a/MatMul"]
    assert errors["/z/MatMul"] > 2 * errors["/a/MatMul"] and errors["/a/MatMul"] < 0.01  # measured 0.0189, 0.0082


def test_each_token_is_quantised_alone(tmp_path):
    """Per-token scales: a row's output does not depend on the other rows of the batch (exact)."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (32, 16)).astype(np.float32)
    _one_matmul(tmp_path / "f.onnx", w, np.zeros(16, np.float32))
    x = rng.normal(0, 1, (4, 5, 32)).astype(np.float32)
    int8_graph.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {"x": np.abs(x).max(axis=(0, 1))})
    alone = _run(tmp_path / "q.onnx", x[:1, :2])
    mates = x.copy()
    mates[1:] *= 100  # loud batch-mates would change a per-tensor scale
    assert np.array_equal(_run(tmp_path / "q.onnx", mates)[:1, :2], alone)


def test_keep_and_unknown_names(tmp_path):
    w = np.eye(8, dtype=np.float32)
    _one_matmul(tmp_path / "f.onnx", w, np.zeros(8, np.float32))
    settings = int8_graph.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {"x": np.ones(8, np.float32)},
                             keep=["/layer/dense/MatMul"])
    assert settings["matmuls_kept_fp32"] == ["/layer/dense/MatMul"] and settings["matmuls_quantized"] == []
    assert [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node] == ["MatMul", "Add"]
    with pytest.raises(ExportError, match="not weight MatMuls"):
        int8_graph.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {}, keep=["nope"])
    with pytest.raises(ExportError, match="no calibration range"):
        int8_graph.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", {})


def test_cpu_kind_rules():
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2", "avx512bw", "avx512_vnni", "amx_int8"]}) == "amx"
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2", "avx512bw", "avx512_vnni"]}) == "avx512_vnni"
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2", "avx_vnni"]}) == "avx_vnni"
    assert cpu_kind({"machine": "x86_64", "flags": ["avx2"]}) == "avx2"
    assert cpu_kind({"machine": "aarch64", "flags": ["asimd", "asimddp"]}) == "arm64_dot"
    assert cpu_kind({"machine": "x86_64", "flags": []}) == "other"
    assert int8_saturates("avx2") and not int8_saturates("avx512_vnni") and not int8_saturates("arm64_dot")


def test_export_records_the_gate(e5_export):
    manifest = Manifest.read(e5_export)
    q = manifest.variants["int8"].quantization
    assert q["name"] == "smoothquant-per-token-fused" and q["cpu_kind"] == cpu_kind()
    assert q["gate"]["passed"] and q["gate"]["batch_invariance_min_cosine"] >= 0.9999
    assert q["gate"]["min_cosine"] >= ParityTolerances().int8_min_cosine
    assert q["calibration"]["source"] == "built-in" and q["calibration"]["validation_texts"] >= 100
    # every weight GEMM of 12 layers: the fused Attention's packed Q/K/V and three MatMuls
    assert len(q["matmuls_quantized"]) == 12 * 4 and q["matmuls_kept_fp32"] == []
    assert q["gate"]["attempts"][-1]["form"] in [int8_gate.form_name(f) for f in int8_gate.weight_forms(cpu_kind())]
    ops = [n.op_type for n in onnx.load(str(e5_export / "model_int8.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 48 and ops.count("MultiHeadAttention") == 12
    assert "Attention" not in ops and "SkipLayerNormalization" not in ops
    # split (faster on ORT's CPU): 2 per layer and the embeddings' (INT8 word table: no EmbedLayerNormalization)
    assert ops.count("LayerNormalization") == 25 and q["skip_layer_norm_split"] == 25
    assert "EmbedLayerNormalization" not in ops and ops.count("GatherBlockQuantized") == 1
    assert q["word_embedding"]["fp32_bytes"] == 30522 * 384 * 4 and q["word_embedding"]["int8_bytes"] < 13e6
    # outlier channels: one Gather and one fp32 MatMul of 4 rows for the Q/K/V and FFN output projections' inputs
    # (one more Gather: the token-type embedding)
    assert q["outlier_channels"] == 4 and ops.count("Gather") - 1 == ops.count("MatMul") == 12 * 2
    assert len(ops) <= 12 * 42 + 12  # 1,501 nodes before the fused recipe
    assert len(q["sensitivity"]) == 48  # every weight GEMM measured (the order: test_sensitivity_ranks_...)
    assert manifest.variants["int8"].parity["single_vs_batch_max_abs_diff"] < 1e-5


def test_int8_is_batch_invariant(e5_export):
    texts = [f"passage: text number {i} " + "word " * (i * 7 % 90) for i in range(32)]
    embedder = Embedder.load(e5_export, variant="int8", threads=1)
    batched = embedder.embed(texts, batch_size=32)
    alone = np.concatenate([embedder.embed([t]) for t in texts[:6]])
    assert np.sum(alone * batched[:6], axis=1).min() >= 0.9999


def test_auto_prefers_gated_int8_on_the_same_cpu_kind(e5_export):
    data = json.loads((e5_export / MANIFEST_FILE).read_text())
    assert Manifest.from_dict(data).choose_variant("auto") == "int8"
    assert Embedder.load(e5_export, threads=1).variant == "int8"
    other = Host("arm64", native_bf16=False)
    assert Manifest.from_dict(data).choose_variant("auto", other) == "optimized"  # gated on another CPU kind
    data["variants"]["int8"]["quantization"]["gate"]["passed"] = False
    assert Manifest.from_dict(data).choose_variant("auto") == "optimized"
    del data["variants"]["optimized"]
    assert Manifest.from_dict(data).choose_variant("auto") == "fp32"


def test_gate_miss_keeps_the_most_sensitive_matmuls(tmp_path, tiny_bert_dir, monkeypatch):
    forms = int8_gate.weight_forms(cpu_kind())  # fastest first; the sweep runs on the last
    misses = iter([["forced miss"]] * (len(forms) + 1))
    monkeypatch.setattr(int8_gate, "judge", lambda figures, tolerances: next(misses, []))
    manifest = export_model(str(tiny_bert_dir), tmp_path / "m", quantize="int8", max_length=128)
    q = manifest.variants["int8"].quantization
    assert q["matmuls_kept_fp32"] == list(q["sensitivity"])[:2]  # the two largest errors, in order
    assert [len(a["kept_fp32"]) for a in q["gate"]["attempts"]] == [0] * len(forms) + [1, 2]
    assert [a["form"] for a in q["gate"]["attempts"]] == [int8_gate.form_name(f) for f in forms] + [
        int8_gate.form_name(forms[-1])] * 2
    assert q["weight_storage"] == ("uint8, zero point 128" if forms[-1]["unsigned_weights"] else "int8")
    kept = {n.name for n in onnx.load(str(tmp_path / "m" / "model_int8.onnx")).graph.node
            if n.op_type in ("MatMul", "Attention")}
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
    calib = manifest.variants["int8"].quantization["calibration"]
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


def _attention_graph(path, w, bias, wo, bo, heads):
    """``y = Attention(x, w, bias, mask_index) @ wo + bo``: onnxruntime's fused BERT self-attention, then the
    output projection; ``mask_index`` ``(batch,)`` int32 holds each text's length (right padding)."""
    k, d = w.shape[0], wo.shape[0]
    nodes = [helper.make_node("Attention", ["x", "w", "bias", "mask_index"], ["a"], name="Attention_0",
                              domain="com.microsoft", num_heads=heads),
             helper.make_node("MatMul", ["a", "wo"], ["aw"], name="/attention/output/dense/MatMul"),
             helper.make_node("Add", ["aw", "bo"], ["y"], name="/attention/output/dense/Add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k]),
                     helper.make_tensor_value_info("mask_index", TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        [numpy_helper.from_array(v, name) for v, name in ((w, "w"), (bias, "bias"), (wo, "wo"), (bo, "bo"))])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def _numpy_attention(qkv, lengths, heads):
    b, s, three_d = qkv.shape
    d = three_d // 3
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
    scores = np.where((np.arange(s)[None, :] < lengths[:, None])[:, None, None, :], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, s, d)


def test_fused_attention_becomes_int8_gemm_and_multihead_attention(tmp_path):
    """A fused Attention is rewritten as MatMulIntegerToFloat -> Split -> MultiHeadAttention (mask index and
    bias kept), the output projection's smoothing is folded into the value columns (no Mul at run time), and
    the graph computes the NumPy model of the recipe."""
    rng = np.random.default_rng(2)
    k, heads = 16, 2
    w, bias = rng.normal(0, 0.2, (k, 3 * k)).astype(np.float32), rng.normal(0, 0.1, 3 * k).astype(np.float32)
    wo, bo = rng.normal(0, 0.2, (k, k)).astype(np.float32), rng.normal(0, 0.1, k).astype(np.float32)
    _attention_graph(tmp_path / "f.onnx", w, bias, wo, bo, heads)
    x = rng.normal(0, 1, (2, 6, k)).astype(np.float32)
    x[..., 3] *= 10
    lengths = np.array([6, 4], np.int32)
    session = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    a = _numpy_attention(x @ w + bias, lengths, heads)
    np.testing.assert_allclose(session.run(None, {"x": x, "mask_index": lengths})[0], a @ wo + bo, atol=1e-5)
    ranges = {"x": np.abs(x).max(axis=(0, 1)), "a": np.abs(a).max(axis=(0, 1))}
    settings = int8_graph.quantize(tmp_path / "f.onnx", tmp_path / "q.onnx", ranges, unsigned_weights=True)
    assert settings["matmuls_quantized"] == ["Attention_0", "/attention/output/dense/MatMul"]
    model = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiHeadAttention") == 1 and "Attention" not in ops and ops.count("Mul") == 1  # x only
    mha = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")
    assert mha.input[4] == "mask_index"
    s_x = int8.smoothing_scales(ranges["x"], np.abs(w).max(axis=1))
    s_a = int8.smoothing_scales(ranges["a"], np.abs(wo).max(axis=1))
    w_folded, bias_folded = w.copy(), bias.copy()
    w_folded[:, 2 * k:] /= s_a
    bias_folded[2 * k:] /= s_a
    picked = int8.outlier_channels(ranges["x"], s_x)
    assert settings["outlier_channels"] == 4 and 3 in picked  # x only: a's smoothing is in the value columns
    qkv = int8.simulate(x.reshape(-1, k), w_folded, s_x, 127, outliers=picked).reshape(2, 6, 3 * k) + bias_folded
    a_folded = _numpy_attention(qkv, lengths, heads)  # = attention output / s_a
    want = int8.simulate((a_folded * s_a).reshape(-1, k), wo, s_a, 127).reshape(2, 6, k) + bo
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "mask_index": lengths})[0]
    real = np.arange(6)[None, :] < lengths[:, None]
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(got[real] - (a @ wo + bo)[real]) / np.linalg.norm((a @ wo + bo)[real]) < 0.03


def test_calibration_over_the_byte_budget_runs_in_parts_with_the_same_ranges(tiny_export, monkeypatch):
    """A batch whose GEMM inputs are over INT8_CALIBRATION_BYTES runs in parts (e5-large-v2's export ran out of
    memory on whole batches): per-channel ranges are the same, and as many sample rows are kept."""
    fp32 = Embedder.load(tiny_export, variant="fp32")
    texts = ["query: hello world", "passage: paris is the capital of france", "a", "what is a long text, with words"]
    batches = [fp32.pad(fp32.tokenize(texts))]
    source = int8.load(tiny_export / "model_optimized.onnx")
    whole_ranges, whole_samples = int8.activation_ranges(source, batches)
    monkeypatch.setattr(int8, "INT8_CALIBRATION_BYTES", 1)  # one text per pass
    calls = []
    original = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    parts_ranges, parts_samples = int8.activation_ranges(source, batches)
    assert len(calls) == len(texts) and sorted(parts_ranges) == sorted(whole_ranges)
    for name, top in whole_ranges.items():
        np.testing.assert_allclose(parts_ranges[name], top, rtol=1e-5, atol=1e-6)
        assert parts_samples[name].shape == whole_samples[name].shape
