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
def test_ort_rate_is_positive_and_finite(op):
    rate = R.ort_rate(op, 4, 32, 64, threads=1, min_seconds=0.01, samples=2)
    assert math.isfinite(rate) and rate > 0


def test_measure_on_tiny_shapes_is_self_consistent():
    roof = R.measure(1, hidden=32, intermediate=64, layers=2, passage_m=16, query_m=4, min_seconds=0.01, samples=2)
    assert roof["macs_per_token"] == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert set(R.INT8_OPS) == set(roof["int8_ops"]) and {"int8", "fp32"} <= set(roof["dtypes"])
    for entry in roof["dtypes"].values():
        for where in ("passage", "query"):
            rates = {k: g * 1e9 for k, g in entry[where]["rates_gmacs"].items()}
            assert all(math.isfinite(r) and r > 0 for r in rates.values())
            assert entry[where]["ceiling_tokens_per_s"] == pytest.approx(R.ceiling_tokens_per_s(rates, 32, 64, 2))
        assert entry["query"]["floor_ms"] == pytest.approx(4000 / entry["query"]["ceiling_tokens_per_s"])


def test_shape_from_config(tmp_path):
    assert R.shape_from_config(tmp_path) == R.E5_SMALL  # no config.json
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
