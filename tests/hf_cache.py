"""A hand-built Hugging Face Hub cache for offline tests (``HF_HUB_OFFLINE=1``, no network).

huggingface-hub reads ``HF_HUB_OFFLINE``, ``HF_HOME`` and ``HF_HUB_CACHE`` into module constants when it is
imported, so code under test that uses the cache runs in a fresh interpreter started with :func:`offline_env`.

The cache is laid out as huggingface-hub writes it::

    <cache>/models--<org>--<name>/refs/main              the commit hash (40 hex digits, no newline)
    <cache>/models--<org>--<name>/blobs/<sha256>         file contents
    <cache>/models--<org>--<name>/snapshots/<hash>/<f>   relative symlinks to the blobs
"""

import hashlib
import os
import shutil
from pathlib import Path


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def add_to_cache(cache, repo_id, source, names=None, commit=None, ref="main"):
    """Put the files of ``source`` (all, or ``names``) in ``cache`` as snapshot ``commit`` of ``repo_id``.

    Returns:
        str: the commit hash (default: sha1 of ``repo_id``).
    """
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for path in sorted(Path(source).iterdir()):
        if not path.is_file() or (names is not None and path.name not in names):
            continue
        blob = blobs / _sha256(path)
        if not blob.exists():
            shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


def offline_env(home):
    """The environment of a child process that uses ``home/hub`` as its only, offline HF cache.

    Every ``HF_*``, ``HUGGINGFACE_*``, ``TRANSFORMERS_*`` and ``E5ONNX_*`` variable of this process is dropped
    first, so nothing of the user's setup leaks in, except ``E5ONNX_CACHE_DIR`` (the test session's temporary
    cache, set in conftest.py: children must not write to the user's ~/.cache either).
    """
    env = {k: v for k, v in os.environ.items() if k == "E5ONNX_CACHE_DIR"
           or not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "E5ONNX_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home), HF_HUB_CACHE=str(Path(home) / "hub"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    return env
