"""The INT8 recipe: SmoothQuant scale migration, per-token dynamic activations, per-channel int8 weights.

Why not onnxruntime's ``quantize_dynamic`` as is: it computes one activation scale per tensor, i.e. over the
whole padded batch, so a text's vector moves with its batch-mates, and outlier channels of BERT's
activations (LayerNorm and GELU outputs reach 20-30 while most channels stay near 2) waste most of the
8 bits. Measured on all-MiniLM-L6-v2 over the STS-B test sentences against fp32 (issue 3): per-tensor
per-channel with the FFN output MatMuls in fp32 gave mean/min cosine 0.995/0.975 and moved a text's vector
with its batch (cosine 0.993 alone vs in a batch); this recipe gives 0.998/0.987 with all MatMuls in INT8
and is exactly batch-invariant.

For every weight MatMul ``Y = X W (+ b)``, ``X`` ``(batch, seq, K)`` float32 and ``W`` a constant ``(K, N)``:

1. SmoothQuant (Xiao et al. 2023, arXiv:2211.10438, eq. 4): ``s_k = max|X_k|^α / max|W_k|^(1-α)`` with
   ``α = 0.5``, ``max|X_k|`` from calibration text; ``X' = X / s`` (one ``Mul`` per distinct ``X``) and
   ``W' = diag(s) W`` (folded into the weights). ``X' W' = X W`` exactly in real numbers.
2. Weights: symmetric per output channel, ``w_scale_n = max_k |W'_kn| / 127`` (``/ 63`` with reduce_range),
   int8.
3. Activations: symmetric per token (row), computed in the graph at run time:
   ``a_scale = max(max_k |X'_k| / 127, 1e-30)``, ``q = uint8(X' / a_scale + 128.5)`` — a float→uint8
   ``Cast`` truncates (C++ ``static_cast``), so ``+ 128.5`` rounds to nearest and stores the int8 value
   with zero point 128; values stay inside [1, 255].
4. ``com.microsoft.MatMulIntegerToFloat(q, W_q, a_scale, w_scale, 128, 0)``: an exact int32 product, then
   ``× w_scale × a_scale`` in float32; a non-scalar ``a_scale`` ``(batch, seq, 1)`` is broadcast over the
   output after the product (onnxruntime ``matmul_integer_to_float.cc``, ``ScaleOutput``). The bias stays
   in the graph's ``Add``: the kernel would add a fused bias *before* that per-row scaling.

Each token is quantised on its own, so the result for a text does not depend on the other texts or the
padding of its batch. Weight MatMuls can be kept in fp32 (``keep``), chosen by :func:`sensitivity`.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError

#: SmoothQuant migration strength α (the paper's default; measured best of 0.3-0.8 on MiniLM, STS-B min cosine).
SMOOTHQUANT_ALPHA = 0.5
#: Rows of each MatMul input kept from calibration for :func:`sensitivity`.
SAMPLE_ROWS = 512
_SCALE_FLOOR = 1e-30
_WEIGHT_FLOOR = 1e-12

RECIPE = {
    "name": "smoothquant-per-token",
    "method": "SmoothQuant scale migration + per-token dynamic uint8 activations (zero point 128) + "
              "per-channel symmetric int8 weights, com.microsoft.MatMulIntegerToFloat",
    "smoothquant_alpha": SMOOTHQUANT_ALPHA,
    "activations": "dynamic, per token, symmetric (scale max|x|/127 per row), uint8 with zero point 128",
    "weights": "static, per output channel, symmetric int8",
    "op_types_quantized": ["MatMul with a constant weight"],
    "source": "Xiao et al. 2023, SmoothQuant, arXiv:2211.10438",
}


def weight_matmuls(model):
    """``[(node, weight TensorProto)]`` for every MatMul whose second input is a 2-D initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    return [(n, inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def activation_ranges(model_path, batches, sample_rows=SAMPLE_ROWS, seed=0):
    """Per-channel ``max|X_k|`` of every weight MatMul's input over calibration batches (real tokens only).

    Args:
        model_path: the fp32 ``.onnx`` file.
        batches: iterable of ``(input_ids, attention_mask)`` int64 ``(batch, seq)`` arrays.
        sample_rows: token rows of each input kept (uniformly at random, seeded) for :func:`sensitivity`.

    Returns:
        ``(ranges, samples)``: dicts input name → ``(K,)`` float32, and → ``(≤ sample_rows, K)`` float32.
    """
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    names = sorted({n.input[0] for n, _ in weight_matmuls(model)})
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


def simulate(x, w, s, weight_max):
    """NumPy model of one quantised MatMul (steps 1-4 of the module doc), ``(rows, N)`` float32.

    Used by :func:`sensitivity` and by the tests that check the ONNX graph computes the same thing.
    """
    xs = x / s
    a_scale = np.maximum(np.abs(xs).max(axis=-1, keepdims=True) / 127, _SCALE_FLOOR)
    q = np.trunc(xs / a_scale + 128.5).astype(np.int32) - 128
    w_q, w_scale = quantize_weight(w * s[:, None], weight_max)
    product = q.astype(np.float64) @ w_q.astype(np.float64)  # exact: |sum| <= 127 * 127 * K < 2**53
    return product.astype(np.float32) * a_scale * w_scale


def _smoothing_per_input(pairs, ranges, alpha):
    scales = {}
    for x in {n.input[0] for n, _ in pairs}:
        w_max = np.max([np.abs(numpy_helper.to_array(w)).max(axis=1) for n, w in pairs if n.input[0] == x], axis=0)
        scales[x] = smoothing_scales(ranges[x], w_max, alpha)
    return scales


def sensitivity(model_path, ranges, samples, alpha=SMOOTHQUANT_ALPHA, weight_max=127):
    """Relative error ``||X W - Q(X) Q(W)|| / ||X W||`` of each weight MatMul on the calibration samples.

    Returns:
        ``{node name: error}`` (float), largest first: the order in which MatMuls are kept in fp32 when the
        quality gate is missed.
    """
    model = onnx.load(str(model_path))
    pairs = weight_matmuls(model)
    scales = _smoothing_per_input(pairs, ranges, alpha)
    errors = {}
    for node, w in pairs:
        x = samples[node.input[0]]
        w = numpy_helper.to_array(w).astype(np.float32)
        want = x @ w
        got = simulate(x, w, scales[node.input[0]], weight_max)
        errors[node.name] = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
    return dict(sorted(errors.items(), key=lambda kv: -kv[1]))


def quantize(src, dst, ranges, *, alpha=SMOOTHQUANT_ALPHA, weight_max=127, keep=()):
    """Write ``dst``: ``src`` with every weight MatMul not in ``keep`` replaced by the INT8 recipe.

    Args:
        src: fp32 ``.onnx`` file (optimum export, not fused: the attention's Q/K/V MatMuls must be visible).
        dst: output ``.onnx`` path.
        ranges: :func:`activation_ranges` output.
        alpha: SmoothQuant α.
        weight_max: 127, or 63 (reduce_range) on CPUs whose INT8 kernels saturate (see
            :func:`~e5onnx.runtime.cpu.int8_saturates`).
        keep: MatMul node names left in fp32.

    Returns:
        dict: :data:`RECIPE` plus ``weight_range``, ``matmuls_quantized`` and ``matmuls_kept_fp32`` (names).

    Raises:
        ExportError: ``keep`` names a node that is not a weight MatMul, or an input has no measured range.
    """
    model = onnx.load(str(src))
    graph = model.graph
    pairs = weight_matmuls(model)
    names = {n.name for n, _ in pairs}
    unknown = sorted(set(keep) - names)
    if unknown:
        raise ExportError(f"cannot keep {unknown} in fp32: not weight MatMuls of {str(src)!r}")
    todo = [(n, w) for n, w in pairs if n.name not in set(keep)]
    missing = sorted({n.input[0] for n, _ in todo} - set(ranges))
    if missing:
        raise ExportError(f"no calibration range for MatMul inputs {missing[:3]}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    scales = _smoothing_per_input(todo, ranges, alpha)

    constants = {"q8/inv127": np.array(1 / 127, np.float32), "q8/floor": np.array(_SCALE_FLOOR, np.float32),
                 "q8/half_offset": np.array(128.5, np.float32), "q8/zero_point": np.array(128, np.uint8),
                 "q8/axes": np.array([-1], np.int64)}
    new_inits = [numpy_helper.from_array(v, k) for k, v in constants.items()]
    before, replace = {}, {}
    for x, s in scales.items():  # one smoothing + quantisation chain per distinct MatMul input
        p = f"q8/{x}/"
        new_inits.append(numpy_helper.from_array((1 / s).astype(np.float32), p + "inv_smooth"))
        reduce = (helper.make_node("ReduceMax", [p + "abs", "q8/axes"], [p + "absmax"], keepdims=1)
                  if opset >= 18 else helper.make_node("ReduceMax", [p + "abs"], [p + "absmax"], axes=[-1], keepdims=1))
        before[x] = [
            helper.make_node("Mul", [x, p + "inv_smooth"], [p + "smoothed"]),
            helper.make_node("Abs", [p + "smoothed"], [p + "abs"]),
            reduce,
            helper.make_node("Mul", [p + "absmax", "q8/inv127"], [p + "scale_raw"]),
            helper.make_node("Max", [p + "scale_raw", "q8/floor"], [p + "scale"]),
            helper.make_node("Div", [p + "smoothed", p + "scale"], [p + "ratio"]),
            helper.make_node("Add", [p + "ratio", "q8/half_offset"], [p + "shifted"]),
            helper.make_node("Cast", [p + "shifted"], [p + "q"], to=TensorProto.UINT8),
        ]
        for node in before[x]:
            node.name = p + node.op_type + "_" + node.output[0].rsplit("/", 1)[-1]
    for node, w in todo:
        x, p = node.input[0], f"q8/{node.input[0]}/"
        w_q, w_scale = quantize_weight(numpy_helper.to_array(w).astype(np.float32) * scales[x][:, None], weight_max)
        base = node.name + "/q8"
        new_inits += [numpy_helper.from_array(w_q, base + "/weight"), numpy_helper.from_array(w_scale, base + "/weight_scale"),
                      numpy_helper.from_array(np.zeros(w_q.shape[1], np.int8), base + "/weight_zero_point")]
        inputs = [p + "q", base + "/weight", p + "scale", base + "/weight_scale", "q8/zero_point",
                  base + "/weight_zero_point"]
        replace[id(node)] = helper.make_node("MatMulIntegerToFloat", inputs, node.output, name=base, domain="com.microsoft")
    nodes = []
    for node in graph.node:
        nodes.append(replace.get(id(node), node))
        for out in node.output:  # the chain of an input right after the node that makes it
            nodes.extend(before.pop(out, []))
    nodes = [n for chain in before.values() for n in chain] + nodes  # inputs that are graph inputs
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return {**RECIPE, "smoothquant_alpha": alpha, "weight_range": [-weight_max, weight_max],
            "reduce_range": weight_max < 127, "matmuls_quantized": [n.name for n, _ in todo],
            "matmuls_kept_fp32": list(keep)}
