"""The GEMM roofline: the ceiling/floor arithmetic against a hand computation, and small real measurements."""

import math

import pytest

from e5onnx.bench import roofline as R
from e5onnx.bench.report import vs_roofline


def test_e5_small_macs_per_token():
    assert R.macs_per_token() == 12 * (4 * 384 * 384 + 2 * 384 * 1536) == 21_233_664


def test_ceiling_and_floor_match_a_hand_computation():
    rates = {"attention": 100e9, "ffn_in": 200e9, "ffn_out": 50e9}  # MAC/s
    per_layer = 4 * 384 * 384 / 100e9 + 384 * 1536 / 200e9 + 1536 * 384 / 50e9  # s per token
    assert R.ceiling_tokens_per_s(rates, 384, 1536, 12) == pytest.approx(1 / (12 * per_layer), rel=1e-12)
    # 20 tokens: 20 x 21.23 M MAC at these rates
    assert R.floor_ms(20, rates, 384, 1536, 12) == pytest.approx(1000 * 20 * 12 * per_layer, rel=1e-12)
    uniform = {k: 300e9 for k in rates}  # one rate: floor = n x MAC/token / rate
    assert R.floor_ms(20, uniform, 384, 1536, 12) == pytest.approx(1000 * 20 * 21_233_664 / 300e9, rel=1e-12)


def test_ceiling_refuses_bad_rates():
    with pytest.raises(ValueError, match="ffn_in"):
        R.ceiling_tokens_per_s({"attention": 1e9, "ffn_in": 0.0, "ffn_out": 1e9}, 8, 16, 1)
    with pytest.raises(KeyError):
        R.ceiling_tokens_per_s({"attention": 1e9}, 8, 16, 1)


@pytest.mark.parametrize("op", ["MatMul", "MatMulInteger", "MatMulIntegerToFloat"])
def test_ort_rate_is_macs_over_the_median_time_of_a_real_run(monkeypatch, op):
    outputs = []

    def timed(call, min_seconds, samples):  # run the real session once, then report 0.25 ms per call
        outputs.append(call()[0])
        return 0.25e-3

    monkeypatch.setattr(R, "_time_call", timed)
    assert R.ort_rate(op, 4, 32, 64, threads=1) == 4 * 32 * 64 / 0.25e-3
    assert outputs[0].shape == (4, 64) and math.isfinite(float(outputs[0].astype("float64").sum()))


def test_time_call_takes_the_median_block(monkeypatch):
    clock = iter([0.0, 1.0,  # the timed first call: 1 s, so one call per block
                  10.0, 13.0, 20.0, 21.0, 30.0, 32.0])  # blocks of 3, 1 and 2 s
    monkeypatch.setattr(R.time, "perf_counter", lambda: next(clock))
    calls = []
    assert R._time_call(lambda: calls.append(1), min_seconds=0.3, samples=3) == 2.0
    assert len(calls) == 5  # warm-up, the timed call, then 3 blocks of one


@pytest.mark.parametrize("integer_rate, op", [(104e9, "MatMulIntegerToFloat"), (106e9, "MatMulInteger")])
def test_measure_turns_rates_into_ceilings_and_floors(monkeypatch, integer_rate, op):
    """With fixed rates per op (MAC/s): ceiling = rate / MAC per token, floor = 1000 x tokens / ceiling; the int8
    ceiling is MatMulIntegerToFloat's unless MatMulInteger is over 5 % faster."""
    rates = {"MatMulIntegerToFloat": 100e9, "MatMulInteger": integer_rate, "MatMul": 25e9}
    monkeypatch.setattr(R, "ort_rate", lambda name, m, k, n, *args: rates[name])
    roof = R.measure(1, hidden=32, intermediate=64, layers=2, passage_m=16, query_m=4, bf16=False)
    macs = 2 * (4 * 32 * 32 + 2 * 32 * 64)  # 16,384 per token
    assert roof["macs_per_token"] == macs == 16384
    assert set(roof["dtypes"]) == {"int8", "fp32"} and roof["dtypes"]["int8"]["op"] == op
    for dtype, rate in (("int8", rates[op]), ("fp32", 25e9)):
        entry = roof["dtypes"][dtype]
        assert entry["passage"]["rates_gmacs"] == {"attention": rate / 1e9, "ffn_in": rate / 1e9, "ffn_out": rate / 1e9}
        assert entry["passage"]["ceiling_tokens_per_s"] == pytest.approx(rate / 16384, rel=1e-12)
        assert entry["query"]["floor_ms"] == pytest.approx(1000 * 4 * 16384 / rate, rel=1e-12)
    assert roof["dtypes"]["fp32"]["passage"]["ceiling_tokens_per_s"] == pytest.approx(1_525_878.90625)


def test_shape_from_config(tmp_path):
    assert R.shape_from_config(tmp_path) == {"hidden": 384, "intermediate": 1536, "layers": 12}  # e5-small
    (tmp_path / "config.json").write_text('{"hidden_size": 8, "intermediate_size": 32, "num_hidden_layers": 3}')
    assert R.shape_from_config(tmp_path) == {"hidden": 8, "intermediate": 32, "layers": 3}
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match="intermediate_size"):
        R.shape_from_config(tmp_path)


def test_contenders_are_compared_with_their_dtype():
    entry = lambda ceiling, floor: {"passage": {"ceiling_tokens_per_s": ceiling}, "query": {"floor_ms": floor}}  # noqa: E731
    result = {"roofline": {"query_m": 20, "dtypes": {"int8": entry(10000.0, 2.0), "fp32": entry(2000.0, 10.0)}},
              "passages": {"e5onnx-int8": {32: {"tokens_per_s": 6000.0}}, "st-onnx-fp32": {"32": {"tokens_per_s": 1000.0}},
                           "e5onnx-bf16": {32: {"tokens_per_s": 5000.0}}},
              "queries": {"e5onnx-int8": {"p50_ms": 5.0}, "st-onnx-fp32": {"p50_ms": 15.0}}}
    out = vs_roofline(result)
    assert out["e5onnx-int8"]["fraction_of_ceiling"] == {32: 0.6} and out["e5onnx-int8"]["p50_over_floor"] == 2.5
    assert out["st-onnx-fp32"]["dtype"] == "fp32" and out["st-onnx-fp32"]["fraction_of_ceiling"] == {32: 0.5}
    assert "e5onnx-bf16" not in out  # no bf16 roofline in this run
