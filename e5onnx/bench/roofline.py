"""A GEMM roofline for BERT encoders: this machine's int8 / fp32 (/ bf16) matrix-multiply rate at the model's
weight shapes, and the throughput ceiling and single-query compute floor that follow.

What is counted: the weight MatMuls of each encoder layer, ``(M, K) x (K, N)`` with ``M`` tokens —
Q, K, V and the attention output ``(H, H)`` x 4, the FFN input ``(H, I)`` and output ``(I, H)`` (``H`` hidden
size, ``I`` intermediate size, from the model's ``config.json``). For e5-small (H 384, I 1536, 12 layers)
that is ``12 x (4*384*384 + 2*384*1536) = 21.23 M`` multiply-accumulates (MAC) per token. Embeddings,
LayerNorm, GELU and the attention score/value products (``QK^T``, ``PV``, which grow with sequence length)
are excluded, so the ceiling is an upper bound: a real forward pass also spends time there.

The formula (time-weighted over the shapes, not a plain mean of rates):

- ``rate(shape, M)``: measured MAC/s of one ``(M, K) x (K, N)`` product (1 MAC = one multiply + one add);
- seconds per token of one layer = ``sum over the 6 GEMMs of M*K*N / rate(shape, M) / M``
  = ``sum count*K*N / rate``;
- ceiling tokens/s = ``1 / (layers x seconds per token of one layer)``;
- compute floor of one ``n``-token query (ms) = ``1000 * n / ceiling(rates at M = n)``, which is
  ``n x MAC per token / the layer's time-weighted rate``.

Rates are measured through onnxruntime with one-node graphs and the runtime's session settings
(:func:`e5onnx.runtime.session.session_options`: ``intra_op_num_threads`` threads, inter-op 1, sequential,
spinning within a run): fp32 ``MatMul``; int8 as ``MatMulInteger`` (uint8 activations with zero point 128, int8
weight constant with per-column zero points 0, int32 out) and as ``com.microsoft.MatMulIntegerToFloat``
(the same plus per-row activation scales and per-column weight scales, float32 out: the op the INT8 recipe
in :mod:`e5onnx.export.int8` uses). bf16 is a one-``MatMul`` ONNX model compiled by OpenVINO with
``INFERENCE_PRECISION_HINT=bf16`` (as :mod:`e5onnx.runtime.openvino_session` does), when openvino imports.

Units: rates in G MAC/s (10^9 MAC per second), throughput in tokens/s, floors in ms.
"""

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import BENCH_QUERY_TOKENS, TOKEN_BUDGET

#: e5-small's encoder (intfloat/e5-small config.json): hidden size, intermediate size, layers.
E5_SMALL = {"hidden": 384, "intermediate": 1536, "layers": 12}
#: int8 kernels compared; the first is the ceiling unless the second is over 5 % faster.
INT8_OPS = ("MatMulIntegerToFloat", "MatMulInteger")


def layer_gemms(hidden, intermediate):
    """The weight GEMMs of one BERT layer: ``[(name, K, N, count)]``.

    Q, K, V, attention output ``(hidden, hidden)`` x 4; FFN in ``(hidden, intermediate)``; FFN out
    ``(intermediate, hidden)``.
    """
    return [("attention", hidden, hidden, 4), ("ffn_in", hidden, intermediate, 1), ("ffn_out", intermediate, hidden, 1)]


def macs_per_token(hidden=E5_SMALL["hidden"], intermediate=E5_SMALL["intermediate"], layers=E5_SMALL["layers"]):
    """Weight-MatMul multiply-accumulates per token of the whole encoder (21,233,664 for e5-small)."""
    return layers * sum(k * n * c for _, k, n, c in layer_gemms(hidden, intermediate))


def ceiling_tokens_per_s(rates, hidden, intermediate, layers):
    """Ceiling tokens/s from per-shape rates (a pure function of its arguments).

    Args:
        rates: ``{gemm name: MAC/s}`` for every name of :func:`layer_gemms` (``attention``, ``ffn_in``,
            ``ffn_out``), all measured at the same ``M``.

    Returns:
        ``1 / (layers * sum(count * K * N / rate))`` tokens/s.

    Raises:
        KeyError: a shape's rate is missing. ValueError: a rate is not positive and finite.
    """
    seconds = 0.0
    for name, k, n, count in layer_gemms(hidden, intermediate):
        rate = rates[name]
        if not (np.isfinite(rate) and rate > 0):
            raise ValueError(f"rate of {name} must be positive and finite, got {rate!r}")
        seconds += count * k * n / rate
    return 1.0 / (layers * seconds)


def floor_ms(n_tokens, rates, hidden, intermediate, layers):
    """Compute floor (ms) of one ``n_tokens``-token text: ``1000 * n / ceiling(rates)``, rates measured at M = n."""
    return 1000.0 * n_tokens / ceiling_tokens_per_s(rates, hidden, intermediate, layers)


def _gemm_model(op, m, k, n, seed=0):
    """A one-node ONNX model ``Y = op(A, B)`` with a constant ``B`` ``(k, n)``, and its feed ``{"A": ...}``.

    ``op``: ``"MatMul"`` (float32), ``"MatMulInteger"`` (uint8 A, zero point 128; int8 B, per-column zero
    points 0; int32 Y) or ``"MatMulIntegerToFloat"`` (the same plus a per-row ``(m, 1)`` A scale and a
    per-column ``(n,)`` B scale; float32 Y).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if op == "MatMul":
        a = rng.standard_normal((m, k), dtype=np.float32)
        inits = [numpy_helper.from_array((rng.standard_normal((k, n), dtype=np.float32) / np.float32(np.sqrt(k))).astype(np.float32), "B")]
        node, a_type, y_type, domain = helper.make_node("MatMul", ["A", "B"], ["Y"]), TensorProto.FLOAT, TensorProto.FLOAT, ""
    else:
        a = rng.integers(1, 256, (m, k), dtype=np.uint8)
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B"),
                 numpy_helper.from_array(np.array(128, np.uint8), "a_zp"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "b_zp")]
        a_type, domain = TensorProto.UINT8, ""
        if op == "MatMulInteger":
            node, y_type = helper.make_node("MatMulInteger", ["A", "B", "a_zp", "b_zp"], ["Y"]), TensorProto.INT32
        elif op == "MatMulIntegerToFloat":
            inits += [numpy_helper.from_array(np.full((m, 1), 0.02, np.float32), "a_scale"),
                      numpy_helper.from_array(np.full(n, 0.01, np.float32), "b_scale")]
            node = helper.make_node("MatMulIntegerToFloat", ["A", "B", "a_scale", "b_scale", "a_zp", "b_zp"], ["Y"],
                                    domain="com.microsoft")
            y_type, domain = TensorProto.FLOAT, "com.microsoft"
        else:
            raise ValueError(f"unknown GEMM op {op!r}")
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8), {"A": a}


def _time_call(call, min_seconds, samples):
    """Median seconds of one ``call()``: ``samples`` timed blocks of enough calls to last ``min_seconds / samples``."""
    call()  # warm-up: prepacking, arena, first-touch pages
    t0 = time.perf_counter()
    call()
    once = max(time.perf_counter() - t0, 1e-7)
    per_block = max(1, int(min_seconds / samples / once))
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(per_block):
            call()
        times.append((time.perf_counter() - t0) / per_block)
    return statistics.median(times)


def _ort_session(model, threads):
    """An onnxruntime CPU session with :class:`~e5onnx.runtime.session.OnnxEncoder`'s settings, and its run options."""
    import onnxruntime as ort

    from ..runtime.session import session_options

    options, run_options = session_options(threads)
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    return session, run_options


def ort_rate(op, m, k, n, threads, min_seconds=0.3, samples=5):
    """MAC/s of ``op`` (see :func:`_gemm_model`) on ``(m, k) x (k, n)`` through onnxruntime with ``threads``.

    Raises:
        onnxruntime errors when the op is not available (e.g. a build without contrib ops).
    """
    model, feed = _gemm_model(op, m, k, n)
    session, run_options = _ort_session(model, threads)
    seconds = _time_call(lambda: session.run(None, feed, run_options), min_seconds, samples)
    return m * k * n / seconds


def openvino_bf16_rate(m, k, n, threads, min_seconds=0.3, samples=5):
    """``(MAC/s, precision)`` of a float32 ``MatMul`` compiled by OpenVINO's CPU plugin with
    ``INFERENCE_PRECISION_HINT=bf16`` (``precision`` is what the plugin reports it computes in: ``"f32"`` on
    CPUs without bf16 units), or ``(None, reason)`` when openvino cannot be imported or compile the model.
    """
    try:
        import openvino as ov
    except Exception as exc:  # not installed, or its native libraries are broken
        return None, f"openvino not importable ({type(exc).__name__})"
    model, feed = _gemm_model("MatMul", m, k, n)
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        path.write_bytes(model.SerializeToString())
        try:
            compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # RuntimeError with OpenVINO's message
            return None, f"openvino cannot compile a MatMul: {str(exc).strip()[:200]}"
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    request = compiled.create_infer_request()
    seconds = _time_call(lambda: request.infer(feed), min_seconds, samples)
    return m * k * n / seconds, precision


def _dtype_at(measure, hidden, intermediate, layers, m):
    """``{"rates_gmacs": {gemm: G MAC/s}, "ceiling_tokens_per_s"}`` of one dtype at ``m`` tokens."""
    rates = {name: measure(m, k, n) for name, k, n, _ in layer_gemms(hidden, intermediate)}
    return {"rates_gmacs": {name: r / 1e9 for name, r in rates.items()},
            "ceiling_tokens_per_s": ceiling_tokens_per_s(rates, hidden, intermediate, layers)}


def _rates(entry):
    """MAC/s per GEMM of a :func:`_dtype_at` entry (it stores G MAC/s)."""
    return {name: g * 1e9 for name, g in entry["rates_gmacs"].items()}


def measure(threads, hidden=E5_SMALL["hidden"], intermediate=E5_SMALL["intermediate"], layers=E5_SMALL["layers"],
            passage_m=TOKEN_BUDGET, query_m=BENCH_QUERY_TOKENS, min_seconds=0.3, samples=5, bf16=True):
    """Measure the roofline of a BERT encoder's weight GEMMs on this machine.

    Args:
        threads: intra-op threads, as the contenders use.
        hidden, intermediate, layers: the encoder's shape (default e5-small; see :func:`shape_from_config`).
        passage_m: tokens of a passage pass (default the runtime's token budget, 1024).
        query_m: tokens of a single query (the bench passes the median SciFact query length).
        min_seconds: timing per (op, shape, M), split into ``samples`` blocks; the median block is taken.
        bf16: also measure OpenVINO bf16 when openvino imports.

    Returns:
        ``{"shape": {...}, "threads", "macs_per_token", "passage_m", "query_m",
        "dtypes": {dtype: {"op", "passage": {"rates_gmacs": {gemm: G MAC/s}, "ceiling_tokens_per_s"},
        "query": {... at query_m ..., "floor_ms"}}}, "int8_ops": {op: same as a dtype}, "notes": [...]}``
        with dtypes ``int8`` (the faster of :data:`INT8_OPS`, MatMulIntegerToFloat unless MatMulInteger is
        over 5 % faster), ``fp32`` and, when measured, ``bf16``.
    """
    shape = (hidden, intermediate, layers)
    notes = []

    def entry(measure_one, op):
        passage = _dtype_at(measure_one, *shape, passage_m)
        query = _dtype_at(measure_one, *shape, query_m)
        query["floor_ms"] = floor_ms(query_m, _rates(query), *shape)
        return {"op": op, "passage": passage, "query": query}

    def ort(op):
        return lambda m, k, n: ort_rate(op, m, k, n, threads, min_seconds, samples)

    int8_ops = {op: entry(ort(op), op) for op in INT8_OPS}
    first, second = (int8_ops[op] for op in INT8_OPS)
    faster = second if second["passage"]["ceiling_tokens_per_s"] > 1.05 * first["passage"]["ceiling_tokens_per_s"] else first
    dtypes = {"int8": faster, "fp32": entry(ort("MatMul"), "MatMul")}
    if bf16:
        precisions = set()

        def ov(m, k, n):
            rate, precision = openvino_bf16_rate(m, k, n, threads, min_seconds, samples)
            if rate is None:
                raise _Unavailable(precision)
            precisions.add(precision)
            return rate

        try:
            dtypes["bf16"] = entry(ov, "OpenVINO MatMul, INFERENCE_PRECISION_HINT=bf16")
            dtypes["bf16"]["precision"] = ",".join(sorted(precisions))
            if precisions != {"bf16"}:
                notes.append(f"OpenVINO computed the bf16 MatMul in {dtypes['bf16']['precision']} (no bf16 units?)")
        except _Unavailable as exc:
            notes.append(f"no bf16 roofline: {exc}")
    return {"shape": dict(zip(("hidden", "intermediate", "layers"), shape)), "threads": threads,
            "macs_per_token": macs_per_token(*shape), "passage_m": passage_m, "query_m": query_m,
            "dtypes": dtypes, "int8_ops": int8_ops, "notes": notes}


class _Unavailable(Exception):
    """A backend needed for one dtype of the roofline is missing (the message says why)."""


def shape_from_config(model_dir):
    """``{"hidden", "intermediate", "layers"}`` from a model folder's ``config.json`` (e5-small if absent).

    Raises:
        ValueError: ``config.json`` exists but lacks ``hidden_size`` / ``intermediate_size`` /
            ``num_hidden_layers``.
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return dict(E5_SMALL)
    config = json.loads(path.read_text(encoding="utf-8"))
    try:
        return {"hidden": int(config["hidden_size"]), "intermediate": int(config["intermediate_size"]),
                "layers": int(config["num_hidden_layers"])}
    except KeyError as exc:
        raise ValueError(f"{path} has no {exc.args[0]!r}: cannot size the roofline") from None


def dtype_of(contender_name):
    """The roofline dtype a contender is compared with: ``int8`` for int8 variants, ``bf16``, else ``fp32``
    (fp32, optimized, fastembed, torch and sentence-transformers fp32)."""
    if contender_name.endswith("int8"):
        return "int8"
    if contender_name.endswith("bf16"):
        return "bf16"
    return "fp32"


def main(argv=None):
    """``python -m e5onnx.bench.roofline [MODEL_DIR] --threads 2``: print the roofline as JSON."""
    import argparse

    p = argparse.ArgumentParser(description="GEMM roofline of a BERT encoder's weight MatMuls (onnxruntime, OpenVINO bf16)")
    p.add_argument("model_dir", nargs="?", help="folder with config.json (default: e5-small's shape)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passage-m", type=int, default=TOKEN_BUDGET)
    p.add_argument("--query-m", type=int, default=BENCH_QUERY_TOKENS)
    p.add_argument("--seconds", type=float, default=0.3, help="timing per op, shape and M")
    args = p.parse_args(argv)
    shape = shape_from_config(args.model_dir) if args.model_dir else dict(E5_SMALL)
    print(json.dumps(measure(args.threads, **shape, passage_m=args.passage_m, query_m=args.query_m,
                             min_seconds=args.seconds), indent=2))


if __name__ == "__main__":
    main()
