"""The quality metrics against hand-computed values (MTEB's formulas), with no model involved."""

import math

import numpy as np
import pytest

from e5onnx.bench.quality import ndcg_at_k, read_scifact, stsb_spearman

from conftest import SHARED


def test_ndcg_at_10_hand_computed():
    doc_ids = [f"d{i}" for i in range(12)]
    # query a: relevant d3 ranked 2nd -> 1/log2(3); query b: relevant d0 (1st) and d11 (ranked 12th, outside top 10)
    scores = np.array([[0.9, 0.1, 0.2, 0.8] + [0.0] * 8,
                       [1.0] + [0.5 - i / 100 for i in range(10)] + [0.01]])
    qrels = {"a": {"d3": 1}, "b": {"d0": 1, "d11": 1}}
    want_a = (1 / math.log2(3)) / 1.0
    want_b = 1.0 / (1.0 + 1 / math.log2(3))
    assert ndcg_at_k(scores, doc_ids, ["a", "b"], qrels) == pytest.approx(100 * (want_a + want_b) / 2)


def test_stsb_spearman_of_a_perfect_embedding(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("genre\tscore\tsentence1\tsentence2\n"
                    "x\t5.0\ta\ta\nx\t0.0\ta\tb\nx\t2.5\ta\tc \"quoted\n")

    def embed(texts):  # cosine("a", "a") = 1 > cosine("a", "c") = 0.6 > cosine("a", "b") = 0
        table = {"a": [1.0, 0.0], "b": [0.0, 1.0], 'c "quoted': [0.6, 0.8]}
        return np.array([table[t] for t in texts])

    assert stsb_spearman(embed, path) == pytest.approx(100.0)


@pytest.mark.skipif(not (SHARED / "data" / "scifact").is_dir(), reason="../shared/data/scifact is absent")
def test_read_scifact_counts():
    doc_ids, docs, query_ids, queries, qrels = read_scifact(SHARED / "data" / "scifact")
    assert len(doc_ids) == len(docs) == 5183 and len(set(doc_ids)) == 5183
    assert len(query_ids) == 300 and sum(len(v) for v in qrels.values()) == 339
