"""``e5onnx export MODEL --fallback OTHER``: the README's first command exports intfloat/e5-small where the Hub
(or its cache) has it, else the fallback. Both paths run offline: a hand-built HF cache (as huggingface-hub lays
it out, see tests/test_hub.py) holding the tiny random BERT under the id, or an empty one, with
``HF_HUB_OFFLINE=1`` (huggingface-hub reads it at import, so each export runs in a fresh interpreter)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e5onnx.config import DEFAULT_MODEL_ID, MANIFEST_FILE
from e5onnx.errors import ExportError
from e5onnx.export import export_model
from e5onnx.runtime.manifest import sha256_file

TIMEOUT = 300


def _cache_with(cache, repo_id, source):
    """``cache`` holding the files of ``source`` as the ``main`` snapshot of ``repo_id``; returns the commit."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in sorted(Path(source).iterdir()):
        if path.is_file():
            blob = blobs / sha256_file(path)
            shutil.copyfile(path, blob)
            (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def _export(tmp_path, cache, fallback):
    """Run ``e5onnx export intfloat/e5-small --fallback FALLBACK`` offline against ``cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(cache),
               HF_HUB_DISABLE_TELEMETRY="1", E5ONNX_THREADS="1")
    out = tmp_path / "models" / "main"
    proc = subprocess.run([sys.executable, "-m", "e5onnx.cli", "export", DEFAULT_MODEL_ID, "--fallback", str(fallback),
                           "--output", str(out), "--max-length", "64"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    return proc, out


def test_the_model_is_exported_when_the_hub_cache_has_it(tmp_path, tiny_bert_dir):
    cache = tmp_path / "hub"
    commit = _cache_with(cache, DEFAULT_MODEL_ID, tiny_bert_dir)
    proc, out = _export(tmp_path, cache, tmp_path / "no-such-fallback")
    assert proc.returncode == 0, proc.stderr
    source = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))["source"]
    assert (source["id"], source["revision"], source["path"]) == (DEFAULT_MODEL_ID, commit, None)
    assert "fallback" not in proc.stderr


def test_the_fallback_is_exported_when_the_hub_cannot_be_had(tmp_path, tiny_bert_dir):
    cache = tmp_path / "hub"
    cache.mkdir()
    proc, out = _export(tmp_path, cache, tiny_bert_dir)
    assert proc.returncode == 0, proc.stderr
    source = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))["source"]
    assert (source["id"], source["path"]) == (str(tiny_bert_dir), str(tiny_bert_dir.resolve()))
    assert f"'{DEFAULT_MODEL_ID}' is not a local folder" in proc.stderr
    assert f"exporting the fallback {tiny_bert_dir} instead" in proc.stderr
    assert f"exporting {tiny_bert_dir} to ONNX" in proc.stderr  # our log lines stay; optimum's noise does not
    assert "torch_dtype" not in proc.stderr and "accelerate" not in proc.stderr


def test_neither_model_nor_fallback_names_both(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    missing = tmp_path / "no-such-fallback"
    proc, out = _export(tmp_path, cache, missing)
    assert proc.returncode == 1
    assert proc.stderr.count(f"'{DEFAULT_MODEL_ID}'") == 1  # said once, in the error
    assert "could not be had from the Hub or its cache" in proc.stderr
    assert f"the fallback {str(missing)!r} could not be had either: no such source folder" in proc.stderr
    assert not out.parent.exists()


def test_fallback_with_a_local_model_is_refused(tmp_path, tiny_bert_dir):
    with pytest.raises(ExportError, match="--fallback applies to Hub ids, but .* is a local folder"):
        export_model(str(tiny_bert_dir), tmp_path / "out", fallback=str(tiny_bert_dir))
    assert list(tmp_path.iterdir()) == []
