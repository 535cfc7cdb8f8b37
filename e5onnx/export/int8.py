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

6. Outlier channels (the mixed-precision decomposition of LLM.int8(), Dettmers et al. 2022, arXiv:2208.07339,
   §3.2): BERT's LayerNorm and GELU outputs carry a few channels that are 10-40x a token's RMS on some tokens
   ([CLS], [SEP], punctuation), and a per-token scale set by them leaves the other channels few levels. For
   the inputs of the Q/K/V projection and of the FFN output projection (:func:`takes_outliers`) the
   :data:`OUTLIER_CHANNELS` channels with the largest smoothed calibration range ``max|X_k + γ| / s_k`` are taken
   out: ``Gather`` → fp32 ``MatMul`` with those rows of ``W`` → ``Add`` to the int8 product, whose input and
   weight rows for them are zero (so they set neither the token's scale nor the weight's). Measured on
   all-MiniLM-L6-v2 over the STS-B test sentences against fp32 (AVX-512 VNNI, 2026-12-02, α chosen per input
   with the outliers out): none 0.999015 / 0.994440 (mean / min cosine); Q/K/V + FFN output inputs (the
   recipe) 0.999461 / 0.997464; all three LayerNorm/GELU-fed inputs 0.999561 / 0.997557 (the FFN input's fp32
   part is 4x hidden wide: 8 % more time for a 4 x 256 pass); FFN output only 0.999213 / 0.995576. Channel
   counts 1 / 2 / 4 on all inputs (α not re-chosen): min 0.997291 / 0.997392 / 0.997542. Outlier channel
   splitting instead (Zhao et al. 2019, each outlier as 4 int8 copies of a quarter, no extra GEMM): 0.999116 /
   0.995771.

Each token is quantised on its own, so the result for a text does not depend on the other texts or the
padding of its batch. One quantisation chain serves every GEMM that reads the same input. GEMMs can be kept
in fp32 (``keep``), chosen by :func:`sensitivity`. The graph is written by :func:`.int8_graph.quantize`.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..config import (
    GELU_SHIFT,
    INT8_CALIBRATION_BYTES,
    INT8_SAMPLE_ROWS,
    INT8_SCALE_FLOOR,
    INT8_WEIGHT_FLOOR,
    OUTLIER_CHANNELS,
    SMOOTHQUANT_ALPHA,
    SMOOTHQUANT_ALPHA_GRID,
)
from ..errors import ExportError
from ..runtime.session import ORT_INT_TYPES, make_feed

#: Producers whose output is a GELU (≥ -0.17), quantised unsigned after :data:`~e5onnx.config.GELU_SHIFT`.
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
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
    "outliers": "inputs of the Q/K/V and FFN output projections: the channels of largest smoothed calibration "
                "range computed in fp32 (Gather + MatMul + Add), out of the int8 GEMM",
    "source": "Xiao et al. 2023, SmoothQuant, arXiv:2211.10438; outlier decomposition: Dettmers et al. 2022, "
              "LLM.int8(), arXiv:2208.07339",
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



def load(model):
    """``model`` as an ``onnx.ModelProto``: loaded from a path, or as given (the INT8 build parses the fused graph
    once for :func:`activation_ranges`, :func:`choose_alphas` and :func:`sensitivity`: a multilingual model's
    768 MB word table took seconds per parse)."""
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def activation_ranges(model_path, batches, sample_rows=INT8_SAMPLE_ROWS, seed=0):
    """Per-channel ``max|X_k|`` of every weight GEMM's input over calibration batches (real tokens only).

    Args:
        model_path: the fp32 ``.onnx`` file (plain or fused), or it loaded (:func:`load`; left as it was).
        batches: iterable of ``(input_ids, attention_mask)`` int64 ``(batch, seq)`` arrays; a batch whose GEMM
            inputs are over :data:`~e5onnx.config.INT8_CALIBRATION_BYTES` is run in parts (ranges unchanged).
        sample_rows: token rows of each input kept (uniformly at random, seeded) for :func:`sensitivity`.

    Returns:
        ``(ranges, samples)``: dicts input name → ``(K,)`` float32, and → ``(≤ sample_rows, K)`` float32.

    Raises:
        ExportError: the graph has no weight GEMM (MatMul with a constant weight) to quantise, or there are no
            calibration batches.
    """
    import onnxruntime as ort

    model = load(model_path)
    names = sorted({n.input[0] for n, _ in weight_gemms(model)})
    if not names:
        where = "the graph" if isinstance(model_path, onnx.ModelProto) else repr(str(model_path))
        raise ExportError(f"{where} has no weight MatMul (a MatMul or Attention with a constant weight) "
                          "to quantise: INT8 needs a BERT-like encoder")
    width = {n.input[0]: int(w.dims[0]) for n, w in weight_gemms(model)}
    known, declared = {o.name for o in model.graph.output}, len(model.graph.output)
    for name in names:
        if name not in known:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    serialized = model.SerializeToString()
    del model.graph.output[declared:]  # the caller's model as it was
    session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    del serialized
    # the graph's own inputs (XLM-RoBERTa's have no token_type_ids), fed as the runtime feeds them
    inputs = {i.name: ORT_INT_TYPES.get(i.type, np.int64) for i in session.get_inputs()}
    bytes_per_token = 4 * sum(width[name] for name in names)  # every GEMM input of the graph, float32
    rng = np.random.default_rng(seed)
    ranges, rows = {}, {name: [] for name in names}
    for input_ids, attention_mask in batches:
        # a pass returns every GEMM input at once: at most INT8_CALIBRATION_BYTES of them (e5-large-v2's 24 layers
        # would be 5.6 GB for 16 texts of 512 tokens, held twice: onnxruntime's and NumPy's copies)
        step = max(1, INT8_CALIBRATION_BYTES // (bytes_per_token * input_ids.shape[1]))
        for start in range(0, len(input_ids), step):
            mask = attention_mask[start:start + step]
            outputs = session.run(names, make_feed(inputs, input_ids[start:start + step], mask))
            real = mask.astype(bool)
            for name, x in zip(names, outputs):
                x = x[real] if x.ndim == 3 else x.reshape(-1, x.shape[-1])
                top = np.abs(x).max(axis=0)
                ranges[name] = top if name not in ranges else np.maximum(ranges[name], top)
                rows[name].append(x[rng.choice(len(x), min(len(x), sample_rows), replace=False)])
            del outputs, x  # before the next pass allocates its own
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
    scale = np.maximum(np.abs(w).max(axis=0), INT8_WEIGHT_FLOOR) / weight_max
    q = np.clip(np.round(w / scale), -weight_max, weight_max).astype(np.int8)
    return q, scale.astype(np.float32)


def outlier_channels(x_max, s, count=OUTLIER_CHANNELS):
    """Indices (sorted, int64) of the ``count`` channels with the largest smoothed range ``x_max / s`` (step 6).

    Args:
        x_max: ``(K,)`` calibration ``max|X_k|`` (of ``X + γ`` for a GELU output). s: ``(K,)`` smoothing scales.
    """
    count = min(max(int(count), 0), len(s) - 1)
    return np.sort(np.argsort(-(np.asarray(x_max, np.float64) / s), kind="stable")[:count]).astype(np.int64)


def simulate(x, w, s, weight_max, shift=0.0, outliers=()):
    """NumPy model of one quantised GEMM (steps 1-4 and 6 of the module doc) without its bias, ``(rows, N)``
    float32.

    Args:
        x: ``(rows, K)`` float32 input. w: ``(K, N)`` float32 weight. s: ``(K,)`` smoothing scales.
        weight_max: 127 or 63. shift: :data:`~e5onnx.config.GELU_SHIFT` for a GELU output (unsigned form), else 0.
        outliers: channel indices computed in fp32 (:func:`outlier_channels`).

    Used by :func:`sensitivity` and by the tests that check the ONNX graph computes the same thing.
    """
    x, s = np.asarray(x, np.float32), np.asarray(s, np.float32)
    levels, zero = (255, 0) if shift else (127, 128)
    outliers = np.asarray(outliers, np.int64)
    shifted = (x + np.float32(shift)) if shift else x
    s = s.copy()
    s[outliers] = 0.0  # out of the int8 GEMM: zero input and weight rows
    u = shifted * np.divide(np.float32(1), s, out=np.zeros_like(s), where=s > 0)
    m = np.maximum(np.abs(u).max(axis=-1, keepdims=True), np.float32(INT8_SCALE_FLOOR))
    q = np.clip(np.rint((u / m) / np.float32(1 / levels)) + zero, 0, 255) - zero
    w_q, w_scale = quantize_weight(w * s[:, None], weight_max)
    product = q.astype(np.float64) @ w_q.astype(np.float64)  # exact: |sum| <= 255 * 127 * K < 2**53
    out = product.astype(np.float32) * m * (w_scale / np.float32(levels))
    if len(outliers):
        out += shifted[:, outliers] @ w[outliers]
    if shift:
        out -= np.float32(shift) * w.sum(axis=0, dtype=np.float64).astype(np.float32)
    return out


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


def _shift_of(producers, name):
    """:data:`~e5onnx.config.GELU_SHIFT` when ``name`` is a GELU's output, else 0."""
    node = producers.get(name)
    return GELU_SHIFT if node is not None and node.op_type in GELU_OPS else 0.0


def takes_outliers(producers, name, readers):
    """Whether the GEMM input ``name`` gets step 6: a GELU output (the FFN output projection's input) or an input
    of a fused ``Attention`` (the packed Q/K/V projection's), ``readers`` being the op types of the weight GEMMs
    that read it. Not the FFN's input projection (its output, 4x hidden wide, makes the fp32 part the
    costliest; STS-B min 0.997464 without it, 0.997557 with) nor an attention output (its smoothing is folded
    into the value projection: there is no ``Mul`` to take channels out of)."""
    return _shift_of(producers, name) > 0 or "Attention" in readers


def _outliers_of(producers, name, readers, ranges, s, count):
    """:func:`outlier_channels` of GEMM input ``name`` (its range shifted for a GELU output), or none if it does
    not :func:`take them <takes_outliers>`."""
    if not takes_outliers(producers, name, readers):
        return np.zeros(0, np.int64)
    return outlier_channels(ranges[name] + np.float32(_shift_of(producers, name)), s, count)


def _readers(pairs):
    """``{input name: {op types of the weight GEMMs reading it}}``."""
    out = {}
    for node, _ in pairs:
        out.setdefault(node.input[0], set()).add(node.op_type)
    return out


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


def choose_alphas(model_path, ranges, samples, weight_max=127, grid=SMOOTHQUANT_ALPHA_GRID, outliers=OUTLIER_CHANNELS):
    """SmoothQuant α per GEMM input: the α of ``grid`` with the least mean relative error
    ``||X W - Q(X) Q(W)|| / ||X W||`` (:func:`simulate`) over the GEMMs reading that input, on the
    calibration samples (per-layer α, as SmoothQuant's authors and Intel Neural Compressor's auto-α do).

    ``model_path``: the graph's ``.onnx`` file or it loaded (:func:`load`).

    Returns:
        ``{input name: α}`` (float).
    """
    model = load(model_path)
    pairs = weight_gemms(model)
    producers = _producers(model.graph)
    readers, kinds = {}, _readers(pairs)
    for node, w in pairs:
        readers.setdefault(node.input[0], []).append(numpy_helper.to_array(w).astype(np.float32))
    alphas = {}
    for x, weights in readers.items():
        shift = _shift_of(producers, x)
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        sample = samples[x]
        exact = [sample @ w for w in weights]  # the same for every α: computed once
        norms = [max(np.linalg.norm(y), 1e-30) for y in exact]

        def error(alpha):
            s = smoothing_scales(ranges[x] + np.float32(shift), w_max, alpha)
            picked = _outliers_of(producers, x, kinds[x], ranges, s, outliers)
            return np.mean([np.linalg.norm(simulate(sample, w, s, weight_max, shift, picked) - y) / n
                            for w, y, n in zip(weights, exact, norms)])

        alphas[x] = float(min(grid, key=error))
    return alphas


def sensitivity(model_path, ranges, samples, alpha=SMOOTHQUANT_ALPHA, weight_max=127, outliers=OUTLIER_CHANNELS):
    """Relative error ``||X W - Q(X) Q(W)|| / ||X W||`` of each weight GEMM on the calibration samples
    (``model_path``: the graph's ``.onnx`` file or it loaded, :func:`load`).

    Returns:
        ``{node name: error}`` (float), largest first: the order in which GEMMs are kept in fp32 when the
        quality gate is missed.
    """
    model = load(model_path)
    pairs = weight_gemms(model)
    producers = _producers(model.graph)
    scales = _smoothing_per_input(pairs, ranges, alpha, producers)
    kinds = _readers(pairs)
    errors = {}
    for node, w in pairs:
        x = samples[node.input[0]]
        w = numpy_helper.to_array(w).astype(np.float32)
        want = x @ w
        name, shift = node.input[0], _shift_of(producers, node.input[0])
        picked = _outliers_of(producers, name, kinds[name], ranges, scales[name], outliers)
        got = simulate(x, w, scales[name], weight_max, shift, picked)
        errors[node.name] = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
    return dict(sorted(errors.items(), key=lambda kv: -kv[1]))
