"""The INT8 recipe of :mod:`.int8` written into an ONNX graph: per-token quantisation chains, int8 GEMMs, the fused
Attention rewritten as int8 Q/K/V GEMM + MultiHeadAttention, GELU-shift bias corrections (steps 3-5 of the
recipe's doc)."""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..config import GELU_SHIFT, INT8_SCALE_FLOOR, OUTLIER_CHANNELS, SMOOTHQUANT_ALPHA
from ..errors import ExportError
from .int8 import (_MS, RECIPE, _outliers_of, _producers, _readers, _shift_of, _smoothing_per_input, quantize_weight,
                   weight_gemms)
from .graph import model_opset
from .int8_embedding import replace_embed_layer_norm, replace_word_gather
from .skip_layer_norm import split_skip_layer_norm


class _Builder:
    """New nodes and initializers of one :func:`quantize` call."""

    def __init__(self, graph, opset, unsigned_weights=False):
        self.graph, self.opset, self.unsigned_weights = graph, opset, unsigned_weights
        self.inits = {i.name: i for i in graph.initializer}
        self.new_inits, self.before, self.replace = [], {}, {}
        for name, value in {"q8/floor": np.array(INT8_SCALE_FLOOR, np.float32),
                            "q8/step127": np.array(1 / 127, np.float32), "q8/step255": np.array(1 / 255, np.float32),
                            "q8/zp128": np.array(128, np.uint8), "q8/zp0": np.array(0, np.uint8),
                            "q8/shift": np.array(GELU_SHIFT, np.float32), "q8/axes": np.array([-1], np.int64)}.items():
            self.constant(name, value)

    def constant(self, name, value):
        self.new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def array(self, name):
        return numpy_helper.to_array(self.inits[name])

    def chain(self, x, inv_smooth, shift, outliers=None):
        """Nodes quantising ``x`` per token; returns ``(q, scale, zero point, levels, outliers)``: tensor names,
        the level count, and ``(gathered, channels)`` when ``outliers`` (channel indices) are taken out of the
        int8 part (their ``inv_smooth`` entries are 0) and gathered for an fp32 GEMM, else None."""
        p = f"q8/{x}/"
        nodes, u = [], x
        if shift:
            nodes.append(helper.make_node("Add", [u, "q8/shift"], [p + "shifted"]))
            u = p + "shifted"
        gathered = None
        if outliers is not None and len(outliers) and inv_smooth is not None:
            gathered = (p + "outliers", np.asarray(outliers, np.int64))
            nodes.append(helper.make_node("Gather", [u, self.constant(p + "outlier_channels", gathered[1])],
                                          [gathered[0]], axis=-1))
            inv_smooth = inv_smooth.copy()
            inv_smooth[gathered[1]] = 0.0
        if inv_smooth is not None:
            nodes.append(helper.make_node("Mul", [u, self.constant(p + "inv_smooth", inv_smooth)], [p + "smoothed"]))
            u = p + "smoothed"
        top = u
        if not shift:  # a shifted GELU output is ≥ 0: its max is its max |.|
            nodes.append(helper.make_node("Abs", [u], [p + "abs"]))
            top = p + "abs"
        nodes.append(helper.make_node("ReduceMax", [top, "q8/axes"], [p + "max"], keepdims=1) if self.opset >= 18
                     else helper.make_node("ReduceMax", [top], [p + "max"], axes=[-1], keepdims=1))
        step, zp, levels = ("q8/step255", "q8/zp0", 255) if shift else ("q8/step127", "q8/zp128", 127)
        nodes += [helper.make_node("Max", [p + "max", "q8/floor"], [p + "scale"]),
                  helper.make_node("Div", [u, p + "scale"], [p + "unit"]),
                  helper.make_node("QuantizeLinear", [p + "unit", step, zp], [p + "q"])]
        for node in nodes:
            node.name = p + node.op_type + "_" + node.output[0].rsplit("/", 1)[-1]
        self.before[x] = nodes
        return p + "q", p + "scale", zp, levels, gathered

    def gemm(self, node, w, s, quant, weight_max, output):
        """Nodes of a MatMulIntegerToFloat of ``node``'s weight ``w`` (float, smoothing ``s`` not yet folded),
        plus an fp32 MatMul + Add of the outlier channels if the chain gathered some."""
        q, scale, zp, levels, gathered = quant
        base = node.name + "/q8"
        extra = []
        if gathered is not None:
            name, idx = gathered
            s = s.copy()
            s[idx] = 0.0  # those rows of the int8 weight read zeros
            extra = [helper.make_node("MatMul", [name, self.constant(base + "/outlier_weight", w[idx])],
                                      [base + "/outlier_part"], name=base + "/outlier_MatMul"),
                     helper.make_node("Add", [output + "/int8_part", base + "/outlier_part"], [output],
                                      name=base + "/outlier_Add")]
            output = output + "/int8_part"
        w_q, w_scale = quantize_weight(w * s[:, None], weight_max)
        if self.unsigned_weights:  # uint8 storage, zero point 128: onnxruntime's U8U8 kernels never saturate
            self.constant(base + "/weight", (w_q.astype(np.int16) + 128).astype(np.uint8))
            self.constant(base + "/weight_zero_point", np.full(w_q.shape[1], 128, np.uint8))
        else:
            self.constant(base + "/weight", w_q)
            self.constant(base + "/weight_zero_point", np.zeros(w_q.shape[1], np.int8))
        self.constant(base + "/weight_scale", (w_scale / np.float32(levels)).astype(np.float32))
        return [helper.make_node("MatMulIntegerToFloat", [q, base + "/weight", scale, base + "/weight_scale", zp,
                                                          base + "/weight_zero_point"], [output], name=base,
                                 domain=_MS)] + extra


def _consumers(graph, name):
    return [n for n in graph.node if name in n.input]


def _take_off_bias(b, graph, node, correction):
    """Subtract ``correction`` ``(N,)`` from the bias that follows ``node``'s output: the bias input of a
    ``SkipLayerNormalization`` / ``BiasGelu`` consumer or the constant of an ``Add``; else add an ``Add``."""
    users = _consumers(graph, node.output[0])
    if len(users) == 1:
        user = users[0]
        slot = {"SkipLayerNormalization": 4, "BiasGelu": 1}.get(user.op_type)
        if user.op_type == "Add":
            slot = next((i for i, name in enumerate(user.input) if name in b.inits), None)
        if slot is not None and len(user.input) > slot and user.input[slot] in b.inits:
            name = user.input[slot]
            user.input[slot] = b.constant(f"{node.name}/q8/bias", b.array(name) - correction)
            return None
    out = node.output[0]
    renamed = out + "/q8/unshifted"
    add = helper.make_node("Add", [renamed, b.constant(f"{node.name}/q8/bias_correction", -correction)], [out],
                           name=f"{node.name}/q8/Add")
    return renamed, add


def _attention(b, node, w, s, quant, weight_max, fold):
    """Nodes replacing a fused ``Attention``: int8 Q/K/V GEMM → Split → MultiHeadAttention.

    ``fold``: ``(K,)`` inverse smoothing of the attention's consumer, folded into the value columns, or None.
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    unsupported = sorted(set(attrs) - {"num_heads", "mask_filter_value", "scale"})
    if unsupported or len(node.input) < 3 or len(node.input) > 4 or w.shape[1] % 3:
        raise ExportError(f"cannot quantise Attention node {node.name!r}: attributes {unsupported} or inputs "
                          f"{list(node.input)} are not the plain BERT self-attention")
    d = w.shape[1] // 3
    bias = b.array(node.input[2]).astype(np.float32)
    if fold is not None:
        w, bias = w.copy(), bias.copy()
        w[:, 2 * d:] *= fold[None, :]
        bias[2 * d:] *= fold
    qkv, parts = node.name + "/q8/qkv", [node.name + f"/q8/{c}" for c in "qkv"]
    nodes = b.gemm(node, w, s, quant, weight_max, qkv) + [
             helper.make_node("Split", [qkv, b.constant(node.name + "/q8/split", np.array([d, d, d], np.int64))],
                              parts, name=node.name + "/q8/Split", axis=-1)]
    mask = node.input[3] if len(node.input) > 3 else ""
    nodes.append(helper.make_node("MultiHeadAttention", parts + [b.constant(node.name + "/q8/bias", bias), mask],
                                  list(node.output[:1]), name=node.name + "/q8/MultiHeadAttention", domain=_MS,
                                  **attrs))
    return nodes


def _folds(graph, todo, scales, quantized_attention):
    """``{attention output: inverse smoothing}`` where every reader of an Attention's output is a quantised
    GEMM: the ``Mul`` by ``1 / s`` moves into the value projection (exact)."""
    producers = _producers(graph)
    readers = {}
    for n, _ in todo:
        readers.setdefault(n.input[0], []).append(n)
    folds = {}
    for x, nodes in readers.items():
        p = producers.get(x)
        if (p is not None and p.name in quantized_attention and len(_consumers(graph, x)) == len(nodes)
                and x not in {o.name for o in graph.output}):
            folds[x] = (1 / scales[x]).astype(np.float32)
    return folds


def quantize(src, dst, ranges, *, alpha=SMOOTHQUANT_ALPHA, weight_max=127, keep=(), unsigned_weights=False,
             int8_embeddings=True, outliers=OUTLIER_CHANNELS):
    """Write ``dst``: ``src`` with every weight GEMM not in ``keep`` replaced by the INT8 recipe.

    Args:
        src: fp32 ``.onnx`` file: onnxruntime's fused BERT graph (``model_optimized.onnx``, O2) or a plain one.
        dst: output ``.onnx`` path.
        ranges: :func:`activation_ranges` output (measured on ``src``).
        alpha: SmoothQuant α.
        weight_max: 127, or 63 (reduce_range) on CPUs whose INT8 kernels saturate (see
            :func:`~e5onnx.runtime.cpu.int8_saturates`).
        keep: GEMM node names left in fp32.
        unsigned_weights: store the int8 weights as uint8 with zero point 128 (same values; onnxruntime's
            U8U8 kernels, which do not saturate where its U8S8 kernels do: x86 without VNNI).
        outliers: channels per GEMM input computed in fp32 (:func:`~.int8.outlier_channels`, step 6 of
            :mod:`.int8`); 0: none.
        int8_embeddings: give a fused ``EmbedLayerNormalization``, else the plain word ``Gather`` (XLM-RoBERTa),
            an INT8 word table (:mod:`~.int8_embedding`; 35 MB less for e5-small). On all-MiniLM-L6-v2 (STS-B test sentences vs fp32, AVX-512 VNNI) it moves
            the mean / min cosine from 0.999461 / 0.997464 to 0.999452 / 0.997296 (without the outlier channels
            it took the mean under the gate's 0.999: 0.999014 -> 0.998996, so it was off until then).

    Returns:
        dict: :data:`RECIPE` plus ``weight_range``, ``matmuls_quantized`` and ``matmuls_kept_fp32`` (names),
        and ``skip_layer_norm_split``: how many ``SkipLayerNormalization`` became ``Add`` + ``LayerNormalization``
        (:mod:`~.skip_layer_norm`).

    Raises:
        ExportError: ``keep`` names a node that is not a weight GEMM, an input has no measured range, or an
            Attention node is not the plain BERT self-attention.
    """
    model = onnx.load(str(src))
    graph = model.graph
    pairs = weight_gemms(model)
    unknown = sorted(set(keep) - {n.name for n, _ in pairs})
    if unknown:
        raise ExportError(f"cannot keep {unknown} in fp32: not weight MatMuls of {str(src)!r}")
    todo = [(n, w) for n, w in pairs if n.name not in set(keep)]
    missing = sorted({n.input[0] for n, _ in todo} - set(ranges))
    if missing:
        raise ExportError(f"no calibration range for MatMul inputs {missing[:3]}")
    opset = model_opset(model, 18)
    producers = _producers(graph)
    scales = _smoothing_per_input(todo, ranges, alpha, producers)
    b = _Builder(graph, opset, unsigned_weights)
    attention = {n.name for n, _ in todo if n.op_type == "Attention"}
    folds = _folds(graph, todo, scales, attention)
    readers = _readers(todo)
    quant = {x: b.chain(x, None if x in folds else (1 / s).astype(np.float32), _shift_of(producers, x),
                        _outliers_of(producers, x, readers[x], ranges, s, outliers))
             for x, s in scales.items()}
    fold_into = {producers[x].name: f for x, f in folds.items()}
    extra_after = {}
    for node, w in todo:
        x = node.input[0]
        w_f = numpy_helper.to_array(w).astype(np.float32)
        if node.op_type == "Attention":
            b.replace[id(node)] = _attention(b, node, w_f, scales[x], quant[x], weight_max, fold_into.get(node.name))
            continue
        output = node.output[0]
        shift = _shift_of(producers, x)
        if shift:
            moved = _take_off_bias(b, graph, node, np.float32(shift) * w_f.sum(axis=0, dtype=np.float64).astype(np.float32))
            if moved:
                output, extra_after[node.name] = moved
        b.replace[id(node)] = b.gemm(node, w_f, scales[x], quant[x], weight_max, output)
    nodes = []
    for node in graph.node:
        nodes.extend(b.replace.get(id(node), [node]))
        if node.name in extra_after:
            nodes.append(extra_after[node.name])
        for out in node.output:  # the chain of an input right after the node that makes it
            nodes.extend(b.before.pop(out, []))
    nodes = [n for chain in b.before.values() for n in chain] + nodes  # inputs that are graph inputs
    del graph.node[:]
    graph.node.extend(nodes)
    embedding = None
    if int8_embeddings:
        embedding = replace_embed_layer_norm(graph, opset, b.constant) or replace_word_gather(graph, b.constant)
    split = split_skip_layer_norm(graph, opset)  # faster on onnxruntime's CPU kernels (see that module)
    graph.initializer.extend(b.new_inits)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
    onnx.save(model, str(dst))
    return {**RECIPE, "smoothquant_alpha": alpha, "outlier_channels": int(outliers), "weight_range": [-weight_max, weight_max],
            "reduce_range": weight_max < 127, "weight_storage": "uint8, zero point 128" if unsigned_weights else "int8",
            "matmuls_quantized": [n.name for n, _ in todo],
            "matmuls_kept_fp32": list(keep), "word_embedding": embedding,
            "skip_layer_norm_split": split}
