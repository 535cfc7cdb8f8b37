"""Split onnxruntime's fused ``SkipLayerNormalization`` back into ``Add`` (+ ``Add``) + ``LayerNormalization``.

Why: onnxruntime 1.32's CPU ``SkipLayerNormalization`` kernel is about 6x slower than ``Add`` + the standard
``LayerNormalization`` on the same tensors (one (4, 256, 384) float32 input, 2 threads, AMD EPYC with AVX-512:
0.90 ms vs 0.14 ms), and the fused BERT graph has two per layer: splitting them made the INT8 e5-small-shape
graph 1.20x faster at 4 x 256 tokens and 1.30x at one 20-token query, and the fp32 O2 graph 1.12x
(``benchmarks/graph_speed.py``, 2026-12-02). Same arithmetic: ``LayerNorm(x + bias + skip) * gamma + beta``
(fp32 rounding of the sums may differ in the last bit). Sessions must then keep onnxruntime from fusing them
again at load: :func:`e5onnx.runtime.session.session_options` disables its ``SkipLayerNormFusion``.
"""

import onnx
from onnx import helper

from ..errors import ExportError
from .graph import model_opset


#: ``LayerNormalization`` is a standard ONNX operator from opset 17; below it, graphs keep the fused op.
MIN_OPSET = 17


def split_skip_layer_norm(graph, opset):
    """Rewrite every ``SkipLayerNormalization`` of ``graph`` in place; returns how many were split.

    ``SkipLayerNormalization(input, skip, gamma, beta[, bias])`` with one output becomes
    ``LayerNormalization(Add(Add(input, bias), skip), gamma, beta)`` along the last axis, same epsilon.
    A graph of default-domain ``opset`` under :data:`MIN_OPSET` is left as it is (returns 0).

    Raises:
        ExportError: a node also emits its optional mean / inverse-std-dev / sum outputs (not in BERT graphs).
    """
    if opset < MIN_OPSET:
        return 0
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        if len([o for o in node.output if o]) != 1:
            raise ExportError(f"SkipLayerNormalization {node.name!r} has optional outputs {list(node.output)}; "
                              "only the plain BERT form (one output) can be split")
        x, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 and node.input[4] else None
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        p = node.name or node.output[0]
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [p + "/biased"], name=p + "/AddBias"))
            x = p + "/biased"
        nodes.append(helper.make_node("Add", [x, skip], [p + "/sum"], name=p + "/AddSkip"))
        nodes.append(helper.make_node("LayerNormalization", [p + "/sum", gamma, beta], [node.output[0]],
                                      name=p + "/LayerNormalization", axis=-1, epsilon=eps))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def split_file(path):
    """:func:`split_skip_layer_norm` on the ONNX file ``path``, rewritten in place; returns the count."""
    model = onnx.load(str(path))
    count = split_skip_layer_norm(model.graph, model_opset(model, 0))
    if count:
        onnx.save(model, str(path))
    return count
