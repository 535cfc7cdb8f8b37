"""The INT8 recipe: SmoothQuant scale migration, per-token dynamic activations, per-channel int8 weights,
applied to onnxruntime's fused BERT graph (``Attention``, ``SkipLayerNormalization``, ``BiasGelu``).

Why not onnxruntime's ``quantize_dynamic`` as is: it computes one activation scale per tensor, i.e. over the
whole padded batch, so a text's vector moves with its batch-mates, and outlier channels of BERT's
activations (LayerNorm and GELU outputs reach 20-30 while most channels stay near 2) waste most of the
8 bits. Measured on all-MiniLM-L6-v2 over the STS-B test sentences against fp32 (issue 3): per-tensor
per-channel with the FFN output MatMuls in fp32 gave mean/min cosine 0.995/0.975 and moved a text's vector
with its batch (cosine 0.993 alone vs in a batch); per-token scales are exactly batch-invariant.

For every weight GEMM ``Y = X W (+ b)`` — a ``MatMul`` with a constant ``(K, N)`` weight, or the packed
Q/K/V projection inside a fused ``com.microsoft.Attention`` — with ``X`` ``(batch, seq, K)`` float32:

1. SmoothQuant (Xiao et al. 2023, arXiv:2211.10438, eq. 4): ``s_k = max|X_k|^α / max|W_k|^(1-α)`` with
   ``α = 0.5``, ``max|X_k|`` from calibration text; ``U = X / s`` and ``W' = diag(s) W`` (folded into the
   weights), so ``U W' = X W`` exactly in real numbers. Where ``X`` is an attention output, ``1 / s`` is
   folded into the value projection's columns and bias instead (attention output = softmax weights × V,
   linear in V), so that input needs no ``Mul`` at run time.
2. Weights: symmetric per output channel, ``w_scale_n = max_k |W'_kn| / 127`` (``/ 63`` with
   reduce_range), int8.
3. Activations, per token (row), at run time: ``m = max(max_k |U_k|, 1e-30)``, ``q = QuantizeLinear(U / m,
   1/127, 128)`` (round half to even, uint8 with zero point 128, so ``q - 128`` is in [-127, 127]); the
   ``1/127`` is folded into the weight scale, so ``m`` is the activation scale the GEMM takes.
   Inputs that come out of a GELU (``BiasGelu``, ``Gelu``, ``FastGelu``: never below -0.17) are shifted
   first, ``U = (X + γ) / s`` with ``γ = 0.17``, so ``U ≥ 0`` and all 256 uint8 levels (zero point 0,
   ``q = QuantizeLinear(U / m, 1/255, 0)``) cover ``[0, max U]`` — twice the resolution of the symmetric
   form; ``γ Σ_k W_kn`` is taken off the bias (exact in real numbers).
4. ``com.microsoft.MatMulIntegerToFloat(q, W_q, m, w_scale / L, zp, 0)`` (``L`` 127 or 255): an exact int32
   product, then ``× m × w_scale / L`` in float32; a non-scalar ``a_scale`` ``(batch, seq, 1)`` is
   broadcast over the output after the product (onnxruntime ``matmul_integer_to_float.cc``,
   ``ScaleOutput``). The bias stays outside (the kernel would add a fused bias *before* that per-row
   scaling): in the consumer's ``SkipLayerNormalization`` / ``BiasGelu`` / ``Add``, or the attention's.
5. A quantised ``Attention`` becomes ``MatMulIntegerToFloat`` (packed Q/K/V, ``(batch, seq, 3 hidden)``) →
   ``Split`` → ``com.microsoft.MultiHeadAttention`` (bias and the 1-D mask index of the original node).

Each token is quantised on its own, so the result for a text does not depend on the other texts or the
padding of its batch. One quantisation chain serves every GEMM that reads the same input. GEMMs can be kept
in fp32 (``keep``), chosen by :func:`sensitivity`.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from .int8_embedding import replace_embed_layer_norm

#: SmoothQuant migration strength α (the paper's default; measured best of 0.3-0.8 on MiniLM, STS-B min cosine).
SMOOTHQUANT_ALPHA = 0.5
#: α tried per GEMM input by :func:`choose_alphas`.
ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: Shift added to GELU outputs before unsigned quantisation: GELU's minimum is -0.169971 (at x ≈ -0.7518).
GELU_SHIFT = 0.17
#: Producers whose output is a GELU (≥ -0.17), quantised unsigned after :data:`GELU_SHIFT`.
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
#: Rows of each GEMM input kept from calibration for :func:`sensitivity`.
SAMPLE_ROWS = 512
_SCALE_FLOOR = 1e-30
_WEIGHT_FLOOR = 1e-12
_MS = "com.microsoft"

RECIPE = {
    "name": "smoothquant-per-token-fused",
    "method": "SmoothQuant scale migration + per-token dynamic uint8 activations (symmetric, zero point 128; "
              "GELU outputs shifted by 0.17 and unsigned) + per-channel symmetric int8 weights, "
              "com.microsoft.MatMulIntegerToFloat, on onnxruntime's fused BERT graph (MultiHeadAttention, "
              "SkipLayerNormalization, BiasGelu)",
    "smoothquant_alpha": SMOOTHQUANT_ALPHA,
    "activations": "dynamic, per token: scale max|x| per row (GELU outputs: max(x + 0.17) per row, unsigned)",
    "weights": "static, per output channel, symmetric, 127 or 63 levels (weight_range), stored as int8 or as "
               "uint8 with zero point 128 (weight_storage)",
    "op_types_quantized": ["MatMul with a constant weight", "com.microsoft.Attention (packed Q/K/V projection)"],
    "source": "Xiao et al. 2023, SmoothQuant, arXiv:2211.10438",
}


def weight_gemms(model):
    """``[(node, weight TensorProto)]`` for every weight GEMM: a MatMul whose second input is a 2-D
    initializer, or a ``com.microsoft.Attention`` whose weight (input 1) is one."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        is_gemm = n.op_type == "MatMul" or (n.op_type == "Attention" and n.domain == _MS)
        if is_gemm and len(n.input) > 1 and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            out.append((n, inits[n.input[1]]))
    return out


#: Former name of :func:`weight_gemms`.
weight_matmuls = weight_gemms


def activation_ranges(model_path, batches, sample_rows=SAMPLE_ROWS, seed=0):
    """Per-channel ``max|X_k|`` of every weight GEMM's input over calibration batches (real tokens only).

    Args:
        model_path: the fp32 ``.onnx`` file (plain or fused).
        batches: iterable of ``(input_ids, attention_mask)`` int64 ``(batch, seq)`` arrays.
        sample_rows: token rows of each input kept (uniformly at random, seeded) for :func:`sensitivity`.

    Returns:
        ``(ranges, samples)``: dicts input name → ``(K,)`` float32, and → ``(≤ sample_rows, K)`` float32.

    Raises:
        ExportError: no calibration batches.
    """
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    names = sorted({n.input[0] for n, _ in weight_gemms(model)})
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    rng = np.random.default_rng(seed)
    ranges, rows = {}, {name: [] for name in names}
    for input_ids, attention_mask in batches:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids)}
        outputs = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        real = attention_mask.astype(bool)
        for name, x in zip(names, outputs):
            x = x[real] if x.ndim == 3 else x.reshape(-1, x.shape[-1])
            top = np.abs(x).max(axis=0)
            ranges[name] = top if name not in ranges else np.maximum(ranges[name], top)
            rows[name].append(x[rng.choice(len(x), min(len(x), sample_rows), replace=False)])
    if not ranges:
        raise ExportError("no calibration batches: cannot measure activation ranges for INT8")
    samples = {}
    for name, parts in rows.items():
        x = np.concatenate(parts)
        samples[name] = x[rng.choice(len(x), min(len(x), sample_rows), replace=False)]
    return {k: v.astype(np.float32) for k, v in ranges.items()}, samples


def smoothing_scales(x_max, w_max, alpha=SMOOTHQUANT_ALPHA):
    """SmoothQuant's ``s_k = max|X_k|^α / max|W_k|^(1-α)`` (arXiv:2211.10438, eq. 4), ``(K,)`` float32 > 0."""
    s = np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
    return np.clip(s, 1e-5, 1e5).astype(np.float32)


def quantize_weight(w, weight_max):
    """Symmetric per-column int8: ``(w_q (K, N) int8, w_scale (N,) float32)`` with ``|w_q| <= weight_max``."""
    scale = np.maximum(np.abs(w).max(axis=0), _WEIGHT_FLOOR) / weight_max
    q = np.clip(np.round(w / scale), -weight_max, weight_max).astype(np.int8)
    return q, scale.astype(np.float32)


def simulate(x, w, s, weight_max, shift=0.0):
    """NumPy model of one quantised GEMM (steps 1-4 of the module doc) without its bias, ``(rows, N)`` float32.

    Args:
        x: ``(rows, K)`` float32 input. w: ``(K, N)`` float32 weight. s: ``(K,)`` smoothing scales.
        weight_max: 127 or 63. shift: :data:`GELU_SHIFT` for a GELU output (unsigned form), else 0.

    Used by :func:`sensitivity` and by the tests that check the ONNX graph computes the same thing.
    """
    x, s = np.asarray(x, np.float32), np.asarray(s, np.float32)
    levels, zero = (255, 0) if shift else (127, 128)
    u = ((x + np.float32(shift)) if shift else x) * (np.float32(1) / s)
    m = np.maximum(np.abs(u).max(axis=-1, keepdims=True), np.float32(_SCALE_FLOOR))
    q = np.clip(np.rint((u / m) / np.float32(1 / levels)) + zero, 0, 255) - zero
    w_q, w_scale = quantize_weight(w * s[:, None], weight_max)
    product = q.astype(np.float64) @ w_q.astype(np.float64)  # exact: |sum| <= 255 * 127 * K < 2**53
    out = product.astype(np.float32) * m * (w_scale / np.float32(levels))
    if shift:
        out -= np.float32(shift) * w.sum(axis=0, dtype=np.float64).astype(np.float32)
    return out


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


def _shift_of(producers, name):
    """:data:`GELU_SHIFT` when ``name`` is a GELU's output, else 0."""
    node = producers.get(name)
    return GELU_SHIFT if node is not None and node.op_type in GELU_OPS else 0.0


def _smoothing_per_input(pairs, ranges, alpha, producers=None):
    """``{input name: (K,) scales}`` for the distinct inputs of ``pairs``; for a GELU output the range is
    of the shifted input ``X + γ``. ``alpha``: one α for all, or ``{input name: α}``."""
    producers = producers or {}
    scales = {}
    for x in {n.input[0] for n, _ in pairs}:
        w_max = np.max([np.abs(numpy_helper.to_array(w)).max(axis=1) for n, w in pairs if n.input[0] == x], axis=0)
        x_max = ranges[x] + np.float32(_shift_of(producers, x))
        scales[x] = smoothing_scales(x_max, w_max, alpha[x] if isinstance(alpha, dict) else alpha)
    return scales


def choose_alphas(model_path, ranges, samples, weight_max=127, grid=ALPHA_GRID):
    """SmoothQuant α per GEMM input: the α of ``grid`` with the least mean relative error
    ``||X W - Q(X) Q(W)|| / ||X W||`` (:func:`simulate`) over the GEMMs reading that input, on the
    calibration samples (per-layer α, as SmoothQuant's authors and Intel Neural Compressor's auto-α do).

    Returns:
        ``{input name: α}`` (float).
    """
    model = onnx.load(str(model_path))
    pairs = weight_gemms(model)
    producers = _producers(model.graph)
    readers = {}
    for node, w in pairs:
        readers.setdefault(node.input[0], []).append(numpy_helper.to_array(w).astype(np.float32))
    alphas = {}
    for x, weights in readers.items():
        shift = _shift_of(producers, x)
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        sample = samples[x]

        def error(alpha):
            s = smoothing_scales(ranges[x] + np.float32(shift), w_max, alpha)
            return np.mean([np.linalg.norm(simulate(sample, w, s, weight_max, shift) - sample @ w)
                            / max(np.linalg.norm(sample @ w), 1e-30) for w in weights])

        alphas[x] = float(min(grid, key=error))
    return alphas


def sensitivity(model_path, ranges, samples, alpha=SMOOTHQUANT_ALPHA, weight_max=127):
    """Relative error ``||X W - Q(X) Q(W)|| / ||X W||`` of each weight GEMM on the calibration samples.

    Returns:
        ``{node name: error}`` (float), largest first: the order in which GEMMs are kept in fp32 when the
        quality gate is missed.
    """
    model = onnx.load(str(model_path))
    pairs = weight_gemms(model)
    producers = _producers(model.graph)
    scales = _smoothing_per_input(pairs, ranges, alpha, producers)
    errors = {}
    for node, w in pairs:
        x = samples[node.input[0]]
        w = numpy_helper.to_array(w).astype(np.float32)
        want = x @ w
        got = simulate(x, w, scales[node.input[0]], weight_max, _shift_of(producers, node.input[0]))
        errors[node.name] = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
    return dict(sorted(errors.items(), key=lambda kv: -kv[1]))


class _Builder:
    """New nodes and initializers of one :func:`quantize` call."""

    def __init__(self, graph, opset, unsigned_weights=False):
        self.graph, self.opset, self.unsigned_weights = graph, opset, unsigned_weights
        self.inits = {i.name: i for i in graph.initializer}
        self.new_inits, self.before, self.replace = [], {}, {}
        for name, value in {"q8/floor": np.array(_SCALE_FLOOR, np.float32),
                            "q8/step127": np.array(1 / 127, np.float32), "q8/step255": np.array(1 / 255, np.float32),
                            "q8/zp128": np.array(128, np.uint8), "q8/zp0": np.array(0, np.uint8),
                            "q8/shift": np.array(GELU_SHIFT, np.float32), "q8/axes": np.array([-1], np.int64)}.items():
            self.constant(name, value)

    def constant(self, name, value):
        self.new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def array(self, name):
        return numpy_helper.to_array(self.inits[name])

    def chain(self, x, inv_smooth, shift):
        """Nodes quantising ``x`` per token; returns ``(q, scale, zero point, levels)`` tensor names/number."""
        p = f"q8/{x}/"
        nodes, u = [], x
        if shift:
            nodes.append(helper.make_node("Add", [u, "q8/shift"], [p + "shifted"]))
            u = p + "shifted"
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
        return p + "q", p + "scale", zp, levels

    def gemm(self, node, w, s, quant, weight_max, output):
        """A MatMulIntegerToFloat of ``node``'s weight ``w`` (float, smoothing ``s`` not yet folded)."""
        q, scale, zp, levels = quant
        w_q, w_scale = quantize_weight(w * s[:, None], weight_max)
        base = node.name + "/q8"
        if self.unsigned_weights:  # uint8 storage, zero point 128: onnxruntime's U8U8 kernels never saturate
            self.constant(base + "/weight", (w_q.astype(np.int16) + 128).astype(np.uint8))
            self.constant(base + "/weight_zero_point", np.full(w_q.shape[1], 128, np.uint8))
        else:
            self.constant(base + "/weight", w_q)
            self.constant(base + "/weight_zero_point", np.zeros(w_q.shape[1], np.int8))
        self.constant(base + "/weight_scale", (w_scale / np.float32(levels)).astype(np.float32))
        return helper.make_node("MatMulIntegerToFloat", [q, base + "/weight", scale, base + "/weight_scale", zp,
                                                         base + "/weight_zero_point"], [output], name=base, domain=_MS)


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
    nodes = [b.gemm(node, w, s, quant, weight_max, qkv),
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
             int8_embeddings=False):
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
        int8_embeddings: give a fused ``EmbedLayerNormalization`` an INT8 word table (:mod:`~.int8_embedding`;
            35 MB less for e5-small). Off by default: on all-MiniLM-L6-v2 it moved the STS-B mean cosine to
            fp32 from 0.999014 to 0.998996, under the raised gate's 0.999 (min 0.995210 -> 0.995419).

    Returns:
        dict: :data:`RECIPE` plus ``weight_range``, ``matmuls_quantized`` and ``matmuls_kept_fp32`` (names).

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
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    producers = _producers(graph)
    scales = _smoothing_per_input(todo, ranges, alpha, producers)
    b = _Builder(graph, opset, unsigned_weights)
    attention = {n.name for n, _ in todo if n.op_type == "Attention"}
    folds = _folds(graph, todo, scales, attention)
    quant = {x: b.chain(x, None if x in folds else (1 / s).astype(np.float32), _shift_of(producers, x))
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
        b.replace[id(node)] = [b.gemm(node, w_f, scales[x], quant[x], weight_max, output)]
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
        embedding = replace_embed_layer_norm(graph, opset, b.constant)
    graph.initializer.extend(b.new_inits)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
    onnx.save(model, str(dst))
    return {**RECIPE, "smoothquant_alpha": alpha, "weight_range": [-weight_max, weight_max],
            "reduce_range": weight_max < 127, "weight_storage": "uint8, zero point 128" if unsigned_weights else "int8",
            "matmuls_quantized": [n.name for n, _ in todo],
            "matmuls_kept_fp32": list(keep), "word_embedding": embedding}
