"""An INT8 word-embedding table for the INT8 variant: the fused ``EmbedLayerNormalization`` becomes
``com.microsoft.GatherBlockQuantized`` (uint8 rows, one scale per block of 128 values) + token-type ``Gather`` +
``SkipLayerNormalization`` with the position table as its (broadcast) skip, and the 1-D mask index as
``ReduceSum`` of the attention mask (what EmbedLayerNormalization computes for right-padded masks).

XLM-RoBERTa's graph has no ``EmbedLayerNormalization``: onnxruntime's fusion does not match its position ids,
which start after the pad id (``fusion_embedlayer.py``: "TODO: Support roberta"), so the embeddings stay plain
ops; there the word table's own ``Gather(table, input_ids)`` becomes ``GatherBlockQuantized``
(:func:`replace_word_gather`): multilingual-e5's 250,002 x 768 table is 768 MB in float32, 193 MB as uint8.

e5-small's fp32 word table is 30522 × 384 × 4 bytes = 47 MB of the INT8 process; as uint8 it is 11.7 MB plus
0.4 MB of scales. Each block ``b`` of a row is quantised symmetrically: ``scale = max |e_b| / 127``,
``q = round(e_b / scale) + 128`` (zero point 128). The lookup dequantises only the rows it gathers.
"""

import numpy as np
from onnx import helper, numpy_helper

from ..config import INT8_WORD_TABLE_MAX_BLOCK
from ..errors import ExportError

_MS = "com.microsoft"


def block_size(dim):
    """The largest power of two from 16 to :data:`INT8_WORD_TABLE_MAX_BLOCK` that divides ``dim``, or None."""
    size = INT8_WORD_TABLE_MAX_BLOCK
    while size >= 16:
        if dim % size == 0:
            return size
        size //= 2
    return None


#: Rows of the table quantised at a time by :func:`quantize_table` (its float32 temporaries stay a few MB).
_TABLE_ROWS = 4096


def quantize_table(table, block):
    """``(q (V, D) uint8, scales (V, D // block) float32, zero points (V, D // block) uint8)`` of a float32 table.

    Works through :data:`_TABLE_ROWS` rows at a time: a multilingual table (250,002 x 768) takes a second, not
    several, and no full-size temporaries."""
    v, d = table.shape
    q = np.empty((v, d), np.uint8)
    scales = np.empty((v, d // block), np.float32)
    for start in range(0, v, _TABLE_ROWS):
        blocks = table[start:start + _TABLE_ROWS].reshape(-1, d // block, block)
        s = np.maximum(np.abs(blocks).max(axis=-1), np.float32(1e-12)) / np.float32(127)
        unit = blocks / s[..., None]
        np.rint(unit, out=unit)
        np.clip(unit, -127, 127, out=unit)
        unit += 128
        q[start:start + _TABLE_ROWS] = unit.reshape(-1, d)
        scales[start:start + _TABLE_ROWS] = s
    return q, scales, np.full(scales.shape, 128, np.uint8)


def dequantize_table(q, scales, block):
    """The float table that :func:`quantize_table`'s output stands for, ``(V, D)`` float32 (for tests)."""
    v, d = q.shape
    return ((q.reshape(v, d // block, block).astype(np.float32) - 128) * scales[..., None]).reshape(v, d)


def replace_embed_layer_norm(graph, opset, add_constant):
    """Rewrite every ``EmbedLayerNormalization`` of ``graph`` in place as the module doc says.

    Args:
        graph: the fused graph (onnx ``GraphProto``), its initializers still float.
        opset: its default-domain opset (15 or more: ``Shape`` with ``start``/``end``).
        add_constant: ``(name, array) -> name``, registers a new initializer.

    Returns:
        dict for the manifest (``word_embedding``: storage, block, bytes before/after), or None when the
        graph has no such node.

    Raises:
        ExportError: the node has position ids, no mask, or a width no block size divides; or opset < 15.
    """
    inits = {i.name: i for i in graph.initializer}
    found = [n for n in graph.node if n.op_type == "EmbedLayerNormalization"]
    if not found:
        return None
    if opset < 15:
        raise ExportError(f"the INT8 word-embedding table needs opset 15 or more (this graph: {opset})")
    record = None
    for node in found:
        replacement, record = _replacement(node, inits, add_constant)
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(at + offset, new)
    return record


def _replacement(node, inits, add_constant):
    ids, types, word, pos, type_table, gamma, beta, mask = (list(node.input) + [""] * 8)[:8]
    if len(node.input) > 8 and node.input[8] or not mask or word not in inits or pos not in inits:
        raise ExportError(f"EmbedLayerNormalization {node.name!r} has position ids, no mask or non-constant "
                          "tables: cannot give it an INT8 word table")
    table = numpy_helper.to_array(inits[word]).astype(np.float32)
    p = f"q8/{node.name}/"
    gather = _quantized_gather(table, ids, [p + "word"], p, add_constant)
    if gather is None:
        raise ExportError(f"no block size from 16 to {INT8_WORD_TABLE_MAX_BLOCK} divides the embedding width {table.shape[1]}")
    eps = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
    summed = p + "word"
    nodes, record = [gather[0]], gather[1]
    if types and type_table:
        nodes += [helper.make_node("Gather", [type_table, types], [p + "type"], name=p + "Gather_type"),
                  helper.make_node("Add", [p + "word", p + "type"], [p + "word_type"], name=p + "Add_type")]
        summed = p + "word_type"
    nodes += [
        helper.make_node("Shape", [ids], [p + "seq"], name=p + "Shape", start=1, end=2),
        helper.make_node("Slice", [pos, add_constant(p + "zero", np.array([0], np.int64)), p + "seq",
                                   add_constant(p + "axis0", np.array([0], np.int64))], [p + "pos"], name=p + "Slice"),
        helper.make_node("SkipLayerNormalization", [summed, p + "pos", gamma, beta], [node.output[0]],
                         name=p + "SkipLayerNormalization", domain=_MS, epsilon=eps),
    ]
    if len(node.output) > 1 and node.output[1]:
        nodes.append(helper.make_node("ReduceSum", [mask, add_constant(p + "axis1", np.array([1], np.int64))],
                                      [node.output[1]], name=p + "ReduceSum_mask", keepdims=0))
    return nodes, record


def _quantized_gather(table, ids, outputs, p, add_constant):
    """``(node, record)``: a ``GatherBlockQuantized`` of ``table`` (``(V, D)`` float32, quantised by
    :func:`quantize_table`) by ``ids`` into ``outputs``, its constants named from ``p``, and the manifest's record
    (storage, block, op, bytes before/after); None when no block size divides ``D``."""
    block = block_size(table.shape[1])
    if block is None:
        return None
    q, scales, zero_points = quantize_table(table, block)
    node = helper.make_node("GatherBlockQuantized", [add_constant(p + "word_q", q), ids,
                                                    add_constant(p + "word_scales", scales),
                                                    add_constant(p + "word_zero_points", zero_points)],
                            outputs, name=p + "GatherBlockQuantized", domain=_MS, gather_axis=0, quantize_axis=1,
                            block_size=block, bits=8)
    record = {"storage": "uint8, zero point 128, one float32 scale per block", "block": block,
              "op": "com.microsoft.GatherBlockQuantized", "fp32_bytes": int(table.nbytes),
              "int8_bytes": int(q.nbytes + scales.nbytes + zero_points.nbytes)}
    return node, record


def replace_word_gather(graph, add_constant):
    """Rewrite the word-embedding lookup of an unfused graph in place: every ``Gather`` of a 2-D float
    initializer by the graph input ``input_ids`` becomes ``GatherBlockQuantized`` of that table quantised as in
    :func:`quantize_table`.

    Args:
        graph: onnx ``GraphProto`` (its initializers still float). add_constant: ``(name, array) -> name``.

    Returns:
        dict for the manifest, as :func:`replace_embed_layer_norm`'s, or None when no such ``Gather`` exists or
        no block size divides the table's width (the table then stays float32).
    """
    inits = {i.name: i for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    found = [n for n in graph.node if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] == "input_ids"
             and "input_ids" in inputs and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
             and not any(a.name == "axis" and a.i != 0 for a in n.attribute)]
    record = None
    for node in found:
        table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        gather = _quantized_gather(table, node.input[1], list(node.output), f"q8/{node.name}/", add_constant)
        if gather is None:
            return None
        at = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(at, gather[0])
        record = {**gather[1], "replaces": "Gather"}
    return record
