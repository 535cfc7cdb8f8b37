"""Configuration in one place: the shared-data resolver."""

import json
from pathlib import Path

import pytest

from e5onnx.bench.run import workload
from e5onnx.config import shared_dir

ROOT = Path(__file__).resolve().parents[1]


def _tiny_scifact(folder):
    """A two-document, one-query SciFact folder in BEIR's layout."""
    folder.mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Cells", "text": "membranes move ions"}, {"_id": "d2", "title": "", "text": "x"}]
    (folder / "corpus.part1.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / "queries.test.jsonl").write_text(json.dumps({"_id": "q1", "text": "what moves ions"}) + "\n",
                                               encoding="utf-8")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")


def test_bench_workload_follows_e5onnx_shared(tmp_path, monkeypatch):
    _tiny_scifact(tmp_path / "elsewhere" / "data" / "scifact")
    monkeypatch.setenv("E5ONNX_SHARED", str(tmp_path / "elsewhere"))
    passages, queries, name = workload(5, 5)
    assert name == "SciFact test (BEIR)"
    assert passages == ["passage: Cells membranes move ions", "passage: x"]
    assert queries == ["query: what moves ions"]


@pytest.mark.parametrize("value", [None, ""])
def test_shared_dir_defaults_to_the_folder_beside_the_checkout(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("E5ONNX_SHARED", raising=False)
    else:
        monkeypatch.setenv("E5ONNX_SHARED", value)
    assert shared_dir() == ROOT.parent / "shared"
