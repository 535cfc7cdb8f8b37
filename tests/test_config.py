"""Configuration in one place: the shared-data resolver, the one version source."""

import json
import re
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


_READ_VERSION = """
import sys

class NoE5onnx:  # setuptools must read the version without importing the package (its dependencies)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "e5onnx":
            raise ImportError("setuptools imported " + name)

sys.meta_path.insert(0, NoE5onnx())
from setuptools.config.pyprojecttoml import read_configuration

print(read_configuration(sys.argv[1])["project"]["version"])
"""


def test_the_version_is_set_once_in_the_package_and_read_by_pyproject(tmp_path):
    """A copy of the project whose ``e5onnx/__init__.py`` says 7.7.7: setuptools builds 7.7.7, statically."""
    import shutil
    import subprocess
    import sys

    pytest.importorskip("setuptools")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "e5onnx").mkdir()
    init = (ROOT / "e5onnx" / "__init__.py").read_text(encoding="utf-8")
    assert init.count("__version__ = ") == 1
    (tmp_path / "e5onnx" / "__init__.py").write_text(
        re.sub(r'__version__ = "[^"]*"', '__version__ = "7.7.7"', init), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", _READ_VERSION, str(tmp_path / "pyproject.toml")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "7.7.7"
