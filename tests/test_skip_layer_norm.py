"""Splitting SkipLayerNormalization into Add + LayerNormalization (e5onnx.export.skip_layer_norm), and the
sessions that keep onnxruntime from fusing it back."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from e5onnx.config import ORT_DISABLED_OPTIMIZERS
from e5onnx.errors import ExportError
from e5onnx.export.skip_layer_norm import split_file, split_skip_layer_norm
from e5onnx.runtime import Embedder
from e5onnx.runtime import session as session_module

H = 16


def _model(with_bias=True, opset=18, outputs=1):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(H).astype(np.float32), n) for n in ("g", "b", "bias")]
    inputs = ["x", "skip", "g", "b"] + (["bias"] if with_bias else [])
    outs = ["y"] + [f"extra{i}" for i in range(1, outputs)]
    node = helper.make_node("SkipLayerNormalization", inputs, outs, name="sln", domain="com.microsoft",
                            epsilon=1e-5)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", H])
                                            for n in ("x", "skip")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.microsoft", 1)])


def _run(model, feed, disabled=()):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                             disabled_optimizers=list(disabled))
    return s.run(None, feed)[0]


def _numpy(x, skip, g, b, bias, eps=1e-5):
    v = x + skip + (bias if bias is not None else 0)
    mu = v.mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(((v - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


@pytest.mark.parametrize("with_bias", [True, False])
def test_split_gives_the_fused_result(with_bias):
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((2, 5, H)).astype(np.float32),
            "skip": rng.standard_normal((2, 5, H)).astype(np.float32)}
    fused = _model(with_bias)
    split = _model(with_bias)
    assert split_skip_layer_norm(split.graph, 18) == 1
    ops = [n.op_type for n in split.graph.node]
    assert ops == (["Add"] if with_bias else []) + ["Add", "LayerNormalization"]
    onnx.checker.check_model(split)
    inits = {i.name: numpy_helper.to_array(i) for i in split.graph.initializer}
    want = _numpy(feed["x"], feed["skip"], inits["g"], inits["b"], inits["bias"] if with_bias else None)
    got = _run(split, feed, ORT_DISABLED_OPTIMIZERS)
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - _run(fused, feed)).max() < 1e-5


def test_old_opsets_keep_the_fused_op():
    model = _model(opset=16)
    assert split_skip_layer_norm(model.graph, 16) == 0
    assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization"]


def test_optional_outputs_are_refused():
    with pytest.raises(ExportError, match="optional outputs"):
        split_skip_layer_norm(_model(outputs=2).graph, 18)


def test_split_file_rewrites_in_place(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    assert split_file(path) == 1
    assert "SkipLayerNormalization" not in [n.op_type for n in onnx.load(str(path)).graph.node]
    assert split_file(path) == 0


def test_sessions_disable_the_fusion_back(tiny_export, monkeypatch):
    seen = []
    real = session_module.ort.InferenceSession

    def spy(*args, **kwargs):
        seen.append(kwargs.get("disabled_optimizers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module.ort, "InferenceSession", spy)
    e = Embedder.load(tiny_export, variant="optimized", threads=1)
    assert seen and all(d == ORT_DISABLED_OPTIMIZERS for d in seen)
    assert "SkipLayerNormFusion" in ORT_DISABLED_OPTIMIZERS
    assert np.isfinite(e.embed(["query: a"])).all()
