"""The INT8 word-embedding table: EmbedLayerNormalization rewritten as GatherBlockQuantized + SkipLayerNormalization
computes the fused node's output with the dequantised table, and its mask index."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from e5onnx.errors import ExportError
from e5onnx.export import int8_embedding


def _embed_graph(word, pos, types, gamma, beta):
    node = helper.make_node("EmbedLayerNormalization", ["ids", "tt", "word", "pos", "types", "gamma", "beta", "mask"],
                            ["out", "mask_index"], name="EmbedLayerNormalization_0", domain="com.microsoft",
                            epsilon=1e-12)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"]) for n in ("ids", "tt", "mask")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("mask_index", TensorProto.INT32, None)],
        [numpy_helper.from_array(v, n) for v, n in ((word, "word"), (pos, "pos"), (types, "types"),
                                                   (gamma, "gamma"), (beta, "beta"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def _run(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_rewrite_equals_the_fused_node_on_the_dequantised_table():
    rng = np.random.default_rng(0)
    vocab, d = 300, 64
    word, pos, types = (rng.normal(0, 0.05, (n, d)).astype(np.float32) for n in (vocab, 40, 2))
    word[7, 3] = 2.0  # an outlier: only its own block's scale grows
    gamma, beta = rng.normal(1, 0.1, d).astype(np.float32), rng.normal(0, 0.1, d).astype(np.float32)
    ids = rng.integers(0, vocab, (3, 9)).astype(np.int32)
    ids[0, 1] = 7
    mask = (np.arange(9)[None, :] < np.array([[9], [5], [1]])).astype(np.int32)
    feed = {"ids": ids, "tt": np.zeros_like(ids), "mask": mask}
    feed["tt"][1, :3] = 1  # token types still count
    block = int8_embedding.block_size(d)
    q, scales, _ = int8_embedding.quantize_table(word, block)
    dequantised = int8_embedding.dequantize_table(q, scales, block)
    assert block == 64 and q.dtype == np.uint8 and np.abs(dequantised - word).max() <= scales.max() / 2 + 1e-7
    want = _run(_embed_graph(dequantised, pos, types, gamma, beta), feed)
    model = _embed_graph(word, pos, types, gamma, beta)
    added = []
    record = int8_embedding.replace_embed_layer_norm(
        model.graph, 18, lambda name, value: added.append(numpy_helper.from_array(np.asarray(value), name)) or name)
    model.graph.initializer.extend(added)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "word"))
    ops = [n.op_type for n in model.graph.node]
    assert "EmbedLayerNormalization" not in ops and ops[0] == "GatherBlockQuantized"
    assert record["fp32_bytes"] == word.nbytes and record["int8_bytes"] < word.nbytes / 3.5
    got = _run(model, feed)
    np.testing.assert_allclose(got[0], want[0], atol=2e-5)
    assert got[1].tolist() == want[1].tolist() == [9, 5, 1]


def test_refusals():
    assert int8_embedding.block_size(384) == 128 and int8_embedding.block_size(48) == 16
    assert int8_embedding.block_size(40) is None
    model = _embed_graph(*(np.ones((n, 40), np.float32) for n in (5, 4, 2)), np.ones(40, np.float32),
                         np.zeros(40, np.float32))
    with pytest.raises(ExportError, match="no block size"):
        int8_embedding.replace_embed_layer_norm(model.graph, 18, lambda n, v: n)
    with pytest.raises(ExportError, match="opset 15"):
        int8_embedding.replace_embed_layer_norm(model.graph, 14, lambda n, v: n)
    assert int8_embedding.replace_embed_layer_norm(onnx.GraphProto(), 18, lambda n, v: n) is None
