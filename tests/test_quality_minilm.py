"""Quality on real weights: the exported all-MiniLM-L6-v2 (../shared) reproduces its published MTEB scores,
and the INT8 and bf16 variants pass issue 3's quality gate.

Published (MTEB STSBenchmark test, cosine Spearman ×100): 82.03 (shared/data/reference_scores). The fp32
export run through the torch-free Embedder must land within ±0.02 of it.

INT8 quality gate (issue 9's, raised), against fp32 over the 2758 STS-B test sentences: mean cosine ≥ 0.999,
min ≥ 0.995, Spearman ≥ fp32 − 0.1; batch invariance: a sentence alone vs inside one real padded pass of 32
mixed-length sentences, cosine ≥ 0.9999. SciFact nDCG@10 ≥ fp32 − 0.3 takes ~10 minutes on 2 cores: set E5ONNX_SLOW_TESTS=1 (the
benchmark run in benchmarks/results/ records it).
"""

import json
import os

import numpy as np
import pytest

from e5onnx.bench import quality
from e5onnx.bench.quality import read_stsb
from e5onnx.cli import main
from e5onnx.config import MANIFEST_FILE
from e5onnx.runtime import Embedder
from e5onnx.runtime.openvino_session import openvino_available

from conftest import MINILM, MSMARCO, SCIFACT, STSB_TEST, requires_shared

PUBLISHED_STSB = 82.03

pytestmark = requires_shared


def stsb_spearman(embedder):
    assert len(read_stsb(STSB_TEST)[2]) == 1379
    return quality.stsb_spearman(embedder.embed, STSB_TEST)  # default batch size 32


@pytest.fixture(scope="module")
def stsb(minilm_export):
    """STS-B test sentences and their vectors per variant (batch size 32), Spearman x100 per variant."""
    from scipy.stats import spearmanr

    s1, s2, gold = read_stsb(STSB_TEST)
    assert len(gold) == 1379
    variants = ["fp32", "int8"] + (["bf16"] if openvino_available() else [])
    vectors = {v: Embedder.load(minilm_export, variant=v).embed(s1 + s2) for v in variants}
    spearman = {v: 100 * spearmanr(np.sum(x[:len(s1)] * x[len(s1):], axis=1), gold).correlation
                for v, x in vectors.items()}
    return {"sentences": s1 + s2, "vectors": vectors, "spearman": spearman}


@pytest.fixture(scope="module")
def spearman(stsb):
    return stsb["spearman"]


def _cosines(stsb, variant):
    return np.sum(stsb["vectors"][variant].astype(np.float64) * stsb["vectors"]["fp32"], axis=1)


def test_export_passes_default_parity(minilm_export):
    m = json.loads((minilm_export / MANIFEST_FILE).read_text())
    assert m["source"]["weights"]["model.safetensors"]["sha256"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    for name in m["variants"]:
        assert m["variants"][name]["parity"]["passed"], m["variants"][name]["parity"]
    assert m["variants"]["fp32"]["parity"]["max_abs_diff"] <= 1e-5
    assert m["variants"]["int8"]["quantization"]["gate"]["passed"]
    assert m["variants"]["int8"]["quantization"]["matmuls_kept_fp32"] == []  # all 36 MatMuls in INT8


def test_stsb_fp32_reproduces_published_score(spearman):
    assert spearman["fp32"] == pytest.approx(PUBLISHED_STSB, abs=0.02)




def test_int8_quality_gate_on_stsb(stsb):
    """Issue 9's raised gate: mean >= 0.999, min >= 0.995 (AVX-512 VNNI, 2026-12-02: 0.999561 / 0.997557 with
    the outlier channels in fp32; 0.999015 / 0.994440 without); Spearman >= fp32 - 0.1."""
    cos = _cosines(stsb, "int8")
    assert cos.mean() >= 0.999 and cos.min() >= 0.995, (cos.mean(), cos.min())
    assert stsb["spearman"]["int8"] >= stsb["spearman"]["fp32"] - 0.1, stsb["spearman"]


def test_int8_batch_invariance_in_a_real_32_row_pass(minilm_export, stsb):
    """A sentence alone vs inside one padded forward pass of 32 mixed-length sentences (the pass shape is
    asserted: the token budget is raised so that greedy packing cannot split it)."""
    e = Embedder.load(minilm_export, variant="int8")
    shapes, run = [], e.encoder.run
    e.encoder.run = lambda ids, mask: shapes.append(ids.shape) or run(ids, mask)
    sentences = stsb["sentences"]
    rng = np.random.default_rng(0)
    for start in (0, 500, 1500):
        batch = [sentences[i] for i in rng.choice(len(sentences), 32, replace=False)]  # mixed lengths
        batch[0] = sentences[start]
        shapes.clear()
        together = e.embed(batch, batch_size=32, token_budget=32 * e.max_length)
        longest = max(len(r) for r in e.tokenize(batch))
        assert shapes == [(32, longest)] and longest > 2 * min(len(r) for r in e.tokenize(batch))
        alone = e.embed([sentences[start]])[0]
        assert float(alone @ together[0]) >= 0.9999


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (pip install 'e5onnx[openvino]')")
def test_bf16_quality_on_stsb(stsb):
    cos = _cosines(stsb, "bf16")
    assert cos.mean() >= 0.9999 and cos.min() >= 0.999, (cos.mean(), cos.min())
    assert abs(stsb["spearman"]["bf16"] - stsb["spearman"]["fp32"]) <= 0.05, stsb["spearman"]


@pytest.mark.skipif(os.environ.get("E5ONNX_SLOW_TESTS") != "1", reason="SciFact takes ~10 min; set E5ONNX_SLOW_TESTS=1")
def test_scifact_gate(minilm_export):
    scores = {}
    for variant in ("fp32", "int8"):
        e = Embedder.load(minilm_export, variant=variant)
        scores[variant] = quality.scifact_ndcg10(e.embed, e.embed, SCIFACT)
    assert scores["fp32"] == pytest.approx(64.51, abs=0.01)  # published 0.64508
    assert scores["int8"] >= scores["fp32"] - 0.3, scores  # issue 9's gate


def test_model_card_examples_rank_correctly(minilm_export):
    texts = [json.loads(line)["text"] for line in MSMARCO.read_text().splitlines()]
    e = Embedder.load(minilm_export, variant="fp32")
    v = e.embed(texts)
    scores = v[:2] @ v[2:].T  # queries x passages
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0], scores


def test_verify_cli_on_real_weights(minilm_export, capsys):
    assert main(["verify", str(minilm_export), "--source", str(MINILM)]) == 0
    manifest = json.loads((minilm_export / MANIFEST_FILE).read_text())
    assert capsys.readouterr().out.count("PASS") == len(manifest["variants"])
