"""Parity of the e5-small-shaped export with the PyTorch reference (the model card's recipe).

Tolerance: max |Δ| <= 1e-5 on normalised embeddings for fp32 and optimized (the export's default gate);
int8 (SmoothQuant + per-token INT8) on cosine: the quality gate's mean >= 0.997 and min >= 0.985.
"""

import json

import numpy as np
import pytest

from e5onnx.cli import main
from e5onnx.config import MANIFEST_FILE, PASSAGE_PREFIX, QUERY_PREFIX, ParityTolerances
from e5onnx.errors import ParityError
from e5onnx.export import verify_folder
from e5onnx.export.battery import MODEL_CARD_EXAMPLES, long_text
from e5onnx.export.reference import TorchReference
from e5onnx.runtime import Embedder

MIXED = [
    "query: a",
    "passage: " + "the quick brown fox jumps over the lazy dog " * 20,
    "",
    "query: Crème brûlée 東京 😀",
    long_text(),
    *MODEL_CARD_EXAMPLES,
]


@pytest.fixture(scope="module")
def reference(e5_shaped_dir):
    return TorchReference(e5_shaped_dir, 512)


@pytest.fixture(scope="module")
def fp32(e5_export):
    return Embedder.load(e5_export, variant="fp32")


def test_manifest_records_passing_parity_for_every_variant(e5_export):
    manifest = json.loads((e5_export / MANIFEST_FILE).read_text())
    assert set(manifest["variants"]) == {"fp32", "optimized", "int8"}
    for name, variant in manifest["variants"].items():
        parity = variant["parity"]
        assert parity["passed"] and parity["token_ids_equal"], (name, parity)
    assert manifest["variants"]["fp32"]["parity"]["max_abs_diff"] <= 1e-5
    assert manifest["variants"]["optimized"]["parity"]["max_abs_diff"] <= 1e-5
    assert manifest["embedding_dim"] == 384 and manifest["max_length"] == 512
    assert manifest["architecture"]["num_hidden_layers"] == 12
    assert manifest["opset"] == 18
    assert manifest["variants"]["optimized"]["optimization"]["fused_operators"]["Attention"] == 12
    for name, entry in manifest["files"].items():
        assert (e5_export / name).stat().st_size == entry["size"]


@pytest.mark.parametrize("variant", ["fp32", "optimized"])
def test_padded_batch_matches_reference(e5_export, reference, variant):
    got = Embedder.load(e5_export, variant=variant).embed(MIXED, batch_size=len(MIXED))
    want = reference.embed(MIXED)
    assert got.shape == (len(MIXED), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5


def test_int8_close_to_reference(e5_export, reference):
    got = Embedder.load(e5_export, variant="int8").embed(MIXED)
    cos = np.sum(got * reference.embed(MIXED), axis=1)
    assert cos.mean() >= 0.997 and cos.min() >= 0.985


def test_single_equals_batched(fp32):
    batched = fp32.embed(MIXED, batch_size=3)
    single = np.stack([fp32.embed(t)[0] for t in MIXED])
    assert np.abs(batched - single).max() <= 1e-5


def test_token_ids_equal_reference(fp32, reference):
    assert fp32.tokenize(MIXED) == reference.token_ids(MIXED)


def test_prefix_helpers_match_reference(fp32, reference):
    queries, passages = ["how much protein should a female eat"], ["Paris is the capital of France."]
    assert np.abs(fp32.embed_queries(queries) - reference.embed([QUERY_PREFIX + queries[0]])).max() <= 1e-5
    assert np.abs(fp32.embed_passages(passages) - reference.embed([PASSAGE_PREFIX + passages[0]])).max() <= 1e-5


def test_verify_cli(e5_export, capsys):
    assert main(["verify", str(e5_export)]) == 0  # source taken from the manifest
    out = capsys.readouterr().out
    assert out.count("PASS") == 3


def test_verify_folder_fails_with_tighter_tolerance(tiny_export, tiny_bert_dir):
    with pytest.raises(ParityError, match="parity check failed for int8") as info:
        verify_folder(tiny_export, source=tiny_bert_dir, tolerances=ParityTolerances(int8_min_cosine=1.0))
    assert info.value.report["fp32"]["passed"] and not info.value.report["int8"]["passed"]
    assert "min cosine" in str(info.value)
