"""The benchmark harness runs every contender side by side (quick mode) and they agree on the vectors."""

import json

import numpy as np
import pytest

from e5onnx.bench import contenders as C
from e5onnx.bench.contenders import sentence_transformers_missing
from e5onnx.bench.run import run
from e5onnx.cli import main
from e5onnx.config import BENCH_ST_BATCH_SIZE

pytest.importorskip("fastembed", reason="fastembed (bench extra) is not installed")


def test_quick_bench_on_tiny_model(tiny_export, tmp_path):
    result = run(tiny_export, tmp_path / "out", threads=1, quick=True)
    names = {"torch-fp32", "fastembed-fp32", "e5onnx-fp32", "e5onnx-optimized", "e5onnx-int8"}
    st = sentence_transformers_missing() is None
    if st:
        names |= {"st-onnx-fp32", "st-onnx-int8"}
    else:
        assert set(result["skipped"]) == {"st-onnx-fp32", "st-onnx-int8"}
    assert set(result["passages"]) == names and set(result["queries"]) == names
    for name in ("fastembed-fp32", "e5onnx-fp32", "e5onnx-optimized") + (("st-onnx-fp32",) if st else ()):
        assert result["agreement"][name]["max_abs_diff"] <= 1e-5, (name, result["agreement"][name])
    if st:
        assert result["agreement"]["st-onnx-int8"]["min_cosine"] > 0.9
        assert result["process"]["st-onnx-int8"]["model_mb"] < result["process"]["st-onnx-fp32"]["model_mb"]
    for per_batch in result["passages"].values():
        assert all(r["tokens_per_s"] > 0 for r in per_batch.values())
    for name, p in result["process"].items():  # measured in a fresh process per contender
        assert p["cold_start_s"] > 0 and 10 < p["peak_rss_mb"] < 4000, (name, p)
    assert result["process"]["e5onnx-int8"]["model_mb"] < result["process"]["e5onnx-fp32"]["model_mb"]
    if result["quality"]:  # STS-B from ../shared, first 64 pairs in quick mode
        assert result["quality"]["torch-fp32"]["min_cosine_to_reference"] == pytest.approx(1.0)
        assert result["quality"]["e5onnx-fp32"]["min_cosine_to_reference"] > 0.99999
        assert result["quality"]["e5onnx-fp32"]["sentences"] == 128
    assert json.loads((tmp_path / "out" / "results.json").read_text())["environment"]["threads"] == 1
    roof = result["roofline"]  # measured in the same run at the tiny model's shapes
    assert roof["threads"] == 1 and roof["dtypes"]["int8"]["passage"]["ceiling_tokens_per_s"] > 0
    assert set(result["vs_roofline"]) == names - {"e5onnx-bf16"}
    assert result["vs_roofline"]["e5onnx-int8"]["dtype"] == "int8"
    assert result["vs_roofline"]["torch-fp32"]["fraction_of_ceiling"][8] > 0
    assert set(result["mixed"]) == {"e5onnx-fp32", "e5onnx-optimized", "e5onnx-int8"}
    assert all(m["texts"] == 32 and m["ratio"] > 0 for m in result["mixed"].values())
    table = (tmp_path / "out" / "results.md").read_text()
    assert all(f"| {n} |" in table for n in names)
    assert "## Targets" in table and "## Roofline" in table and "## Mixed call" in table
    assert "| mixed call (31 queries + 1 long passage) / its parts | e5onnx-int8 |" in table


@pytest.mark.skipif(sentence_transformers_missing() is not None, reason="sentence-transformers is not importable")
def test_st_contender_runs_a_long_call_in_encode_default_passes(tiny_bert_dir, tmp_path):
    """A call of more texts than ``encode``'s default batch size runs as passes of that size, not as one pass:
    one pass of the bench's 128 texts x 512 tokens kept ~9 GB per session in onnxruntime's arena, and the run
    holding both sentence-transformers sessions and fastembed's was OOM-killed (benchmarks/README.md)."""
    import inspect

    from sentence_transformers import SentenceTransformer

    assert inspect.signature(SentenceTransformer.encode).parameters["batch_size"].default == BENCH_ST_BATCH_SIZE == 32
    folder = C.prepare_sentence_transformers(tiny_bert_dir, tmp_path / "st", 1)
    contender = C.SentenceTransformersContender(folder, "st-onnx-fp32", 1, 64)
    passes = []
    contender.model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0]["input_ids"])))
    texts = [f"passage: text {i} " + "word " * (i % 17) for i in range(80)]
    vectors = contender.embed(texts)
    assert passes == [32, 32, 16] and vectors.shape[0] == 80
    np.testing.assert_allclose(vectors[5], contender.embed([texts[5]])[0], atol=1e-5)  # input order kept


def test_bench_cli_quick_skip_torch(tiny_export, tmp_path, capsys):
    assert main(["bench", str(tiny_export), "--out", str(tmp_path / "o"), "--quick", "--threads", "1",
                 "--skip", "torch"]) == 0
    out = capsys.readouterr().out
    assert "| e5onnx-fp32 |" in out and "torch-fp32" not in out
