"""Quality on real weights: the exported all-MiniLM-L6-v2 (../shared) reproduces its published MTEB STS-B score.

Published (MTEB STSBenchmark test, cosine Spearman ×100): 82.03 (shared/data/reference_scores). The fp32
export run through the torch-free Embedder must land within ±0.02 of it.
"""

import json

import pytest

from e5onnx.bench import quality
from e5onnx.bench.quality import read_stsb
from e5onnx.cli import main
from e5onnx.config import MANIFEST_FILE
from e5onnx.runtime import Embedder

from conftest import MINILM, MSMARCO, STSB_TEST, requires_shared

PUBLISHED_STSB = 82.03

pytestmark = requires_shared


def stsb_spearman(embedder):
    assert len(read_stsb(STSB_TEST)[2]) == 1379
    return quality.stsb_spearman(embedder.embed, STSB_TEST)  # default batch size 32


@pytest.fixture(scope="module")
def spearman(minilm_export):
    return {v: stsb_spearman(Embedder.load(minilm_export, variant=v)) for v in ("fp32", "int8")}


def test_export_passes_default_parity(minilm_export):
    m = json.loads((minilm_export / MANIFEST_FILE).read_text())
    assert m["source"]["weights"]["model.safetensors"]["sha256"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    for name in ("fp32", "optimized", "int8"):
        assert m["variants"][name]["parity"]["passed"], m["variants"][name]["parity"]
    assert m["variants"]["fp32"]["parity"]["max_abs_diff"] <= 1e-5
    assert m["variants"]["int8"]["parity"]["mean_cosine"] >= 0.99


def test_stsb_fp32_reproduces_published_score(spearman):
    assert spearman["fp32"] == pytest.approx(PUBLISHED_STSB, abs=0.02)


def test_stsb_int8_stays_close(spearman):
    # INT8 (per-channel, FFN output MatMuls in fp32) loses a little (81.70 vs 82.03 at batch size 32);
    # issue 3 tightens this to fp32 - 0.2.
    assert spearman["int8"] >= spearman["fp32"] - 0.5, spearman


def test_model_card_examples_rank_correctly(minilm_export):
    texts = [json.loads(line)["text"] for line in MSMARCO.read_text().splitlines()]
    e = Embedder.load(minilm_export, variant="fp32")
    v = e.embed(texts)
    scores = v[:2] @ v[2:].T  # queries x passages
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0], scores


def test_verify_cli_on_real_weights(minilm_export, capsys):
    assert main(["verify", str(minilm_export), "--source", str(MINILM)]) == 0
    assert capsys.readouterr().out.count("PASS") == 3
