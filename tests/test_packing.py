"""Greedy packing of texts into forward passes (issue 9, part 2): pass plans, the passes really run (a spy on
``encoder.run`` records each ``input_ids`` shape), unchanged vectors, and the export checks' real 32-row pass."""

import random

import numpy as np
import pytest

from e5onnx.config import TOKEN_BUDGET
from e5onnx.export import int8_gate
from e5onnx.export.battery import battery
from e5onnx.export.parity import run_parity
from e5onnx.runtime import Embedder
from e5onnx.runtime.packing import plan_passes


def spy_shapes(monkeypatch, embedder):
    """Record the ``input_ids`` shape of every forward pass ``embedder`` runs; returns the list."""
    shapes, run = [], embedder.encoder.run
    monkeypatch.setattr(embedder.encoder, "run", lambda ids, mask: shapes.append(ids.shape) or run(ids, mask))
    return shapes


def check_plan(lengths, batch_size, budget, passes):
    """Assert the invariants of a :func:`plan_passes` result."""
    flat = [i for p in passes for i in p]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert flat == sorted(range(len(lengths)), key=lambda i: lengths[i])  # length-sorted, stable
    for k, p in enumerate(passes):
        longest = max(lengths[i] for i in p)
        assert len(p) <= batch_size
        assert len(p) * longest <= budget or len(p) == 1
        if k + 1 < len(passes):  # greedy: the next row would not have fitted this pass
            nxt = lengths[passes[k + 1][0]]
            assert len(p) == batch_size or (len(p) + 1) * nxt > budget


def test_mixed_call_plans_two_passes():
    lengths = [12] * 31 + [420]
    assert plan_passes(lengths, 32, 1024) == [list(range(31)), [31]]
    assert plan_passes(lengths[::-1], 32, 1024) == [list(range(1, 32)), [0]]  # indices are input positions


def test_plan_edges():
    assert plan_passes([], 32, 1024) == []
    assert plan_passes([2000, 3], 32, 1024) == [[1], [0]]  # over the budget: alone
    assert plan_passes([2000, 2000], 32, 1024) == [[0], [1]]
    assert plan_passes([1] * 10, 4, 1024) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # batch_size caps rows
    assert plan_passes([32] * 33, 64, 1024) == [list(range(32)), [32]]  # 32 x 32 = 1024 fits, 33 does not
    assert plan_passes([5, 100, 7], 32, float("inf")) == [[0, 2, 1]]


@pytest.mark.parametrize("seed", range(20))
def test_plan_properties_on_random_lengths(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 30), rng.randint(1, 600)]) for _ in range(rng.randint(1, 300))]
    batch_size, budget = rng.choice([1, 3, 32, 128]), rng.choice([64, 512, 1024, 4096])
    check_plan(lengths, batch_size, budget, plan_passes(lengths, batch_size, budget))


@pytest.fixture(scope="module")
def tiny_fp32(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


def test_mixed_call_runs_two_passes_tiny(tiny_fp32, monkeypatch):
    queries = [f"query: what is {w}" for w in ("paris", "the capital", "protein", "a cafe") * 8][:31]
    passage = "passage: " + "the city of paris is the capital of france " * 12
    texts = queries[:15] + [passage] + queries[15:]
    ids = tiny_fp32.tokenize(texts)
    q_len, p_len = max(len(ids[i]) for i in range(len(texts)) if i != 15), len(ids[15])
    assert 31 * q_len <= TOKEN_BUDGET < 32 * p_len and p_len > 100
    alone = np.concatenate([tiny_fp32.embed([t]) for t in texts])
    shapes = spy_shapes(monkeypatch, tiny_fp32)
    got = tiny_fp32.embed(texts)
    assert shapes == [(31, q_len), (1, p_len)]
    assert np.abs(got - alone).max() < 1e-6  # and in input order


def test_mixed_call_runs_two_passes_e5_shape(e5_export, monkeypatch):
    """The issue's case: 31 short queries and one ~420-token passage in one call are 2 passes (were 16)."""
    embedder = Embedder.load(e5_export, variant="fp32", threads=1)
    queries = [f"query: how much protein should a person of age {i} eat" + " daily" * (i % 6) for i in range(31)]
    passage = "passage: " + " ".join(f"word{i % 50} science" for i in range(140))
    texts = [passage, *queries]
    ids = embedder.tokenize(texts)
    q_len, p_len = max(len(r) for r in ids[1:]), len(ids[0])
    assert 400 <= p_len <= 440
    alone = np.concatenate([embedder.embed([t]) for t in texts])
    shapes = spy_shapes(monkeypatch, embedder)
    got = embedder.embed(texts)
    assert shapes == [(31, q_len), (1, p_len)]
    assert np.abs(got - alone).max() < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_fp32_vectors_do_not_depend_on_packing(tiny_fp32, monkeypatch, seed):
    rng = random.Random(seed)
    words = "the a of paris capital france city hello world protein summit cafe".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 8, 20, 60, 200])))
             for _ in range(rng.randint(20, 70))]
    alone = np.concatenate([tiny_fp32.embed([t]) for t in texts])
    shapes = spy_shapes(monkeypatch, tiny_fp32)
    got = tiny_fp32.embed(texts, batch_size=rng.choice([4, 16, 32]))
    assert sum(b for b, _ in shapes) == len(texts) and len(shapes) > 1
    assert np.abs(got - alone).max() < 1e-6


def test_embed_token_ids_packs_the_same_way(tiny_fp32, monkeypatch):
    rows = tiny_fp32.tokenize(["query: a"] * 31 + ["passage: " + "paris city " * 50])
    shapes = spy_shapes(monkeypatch, tiny_fp32)
    tiny_fp32.embed_token_ids(rows)
    assert shapes == [(31, len(rows[0])), (1, len(rows[-1]))]


def test_int8_gate_checks_one_real_pass_of_32_rows(tiny_export, monkeypatch):
    _, valid, _ = int8_gate.calibration_texts()
    candidate = Embedder.load(tiny_export, variant="int8", threads=1)
    want = Embedder.load(tiny_export, variant="fp32", threads=1).embed(valid).astype(np.float64)
    mixed = valid[:int8_gate.INVARIANCE_BATCH]
    lengths = [len(r) for r in candidate.tokenize(mixed)]
    assert int8_gate.INVARIANCE_BATCH == 32 and max(lengths) > 3 * min(lengths)  # mixed lengths, padded
    shapes = spy_shapes(monkeypatch, candidate)
    figures = int8_gate.measure(want, candidate, valid)
    assert shapes.count((32, max(lengths))) == 1  # the invariance batch: one padded pass of all 32
    assert all(b * s <= TOKEN_BUDGET or b == 1 for b, s in shapes if (b, s) != (32, max(lengths)))
    assert figures["batch_invariance_min_cosine"] >= 0.9999


def test_parity_battery_checks_one_real_padded_pass(tiny_fp32, monkeypatch):
    class Ref:  # run_parity reads these three; the reference vectors are the embedder's own (alone)
        texts = battery()
        token_ids = [list(r) for r in tiny_fp32.tokenize(texts)]
        embeddings = np.concatenate([tiny_fp32.embed([t]) for t in texts])

    lengths = [len(r) for r in Ref.token_ids]
    shapes = spy_shapes(monkeypatch, tiny_fp32)
    result = run_parity(tiny_fp32, Ref, "fp32")
    assert shapes[0] == (len(Ref.texts), max(lengths)) and max(lengths) == tiny_fp32.max_length
    assert shapes[1:] == [(1, n) for n in lengths]  # then each text alone
    assert result["passed"] and result["single_vs_batch_max_abs_diff"] < 1e-6


def test_one_text_path_tokenises_like_the_batch_path(tiny_fp32):
    """A lone text is encoded without encode_batch (latency path, issue 9 part 3): same ids, truncation too."""
    for text in ["", "query: what is paris", "passage: " + "paris city " * 200, "x" * 20000 + " the end"]:
        assert tiny_fp32.tokenize([text]) == tiny_fp32.tokenize([text, "hello"])[:1]
    assert len(tiny_fp32.tokenize(["passage: " + "paris city " * 200])[0]) == tiny_fp32.max_length
