"""e5onnx's cache folder: OpenVINO's compiled models and a record of already verified model files.

Location: ``$E5ONNX_CACHE_DIR`` (empty turns caching off), else ``$XDG_CACHE_HOME/e5onnx``, else
``~/.cache/e5onnx``. A cache that cannot be created or written (read-only home) is simply not used: loads
still work, only slower.
"""

import hashlib
import json
import os
from pathlib import Path

from ..config import CACHE_DIR_ENV
from .atomic import write_json_atomic


def cache_dir(name):
    """The cache sub-folder ``name`` (created), or None when caching is off or the folder is not writable."""
    root = os.environ.get(CACHE_DIR_ENV)
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "e5onnx") if xdg else str(Path.home() / ".cache" / "e5onnx")
    if not root:
        return None
    folder = Path(root) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def _file_state(path):
    """What changes when a file's bytes may have: device, inode, size, mtime and ctime (ns).

    ctime cannot be set by ``touch`` or ``os.utime``: replacing or editing a file always changes it.
    """
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stamp_path(folder, path, sha256):
    key = hashlib.sha256(os.fsencode(Path(path).resolve()) + b"\0" + sha256.encode("ascii")).hexdigest()
    return folder / f"{key}.json"


def known_good(path, sha256):
    """True when ``path`` was verified to have ``sha256`` and has not changed since (same inode, size, mtime,
    ctime): the sha256 need not be computed again (0.16 s for a 133 MB fp32 model). False when unknown."""
    folder = cache_dir("verified")
    if folder is None:
        return False
    try:
        stamp = json.loads(_stamp_path(folder, path, sha256).read_text(encoding="utf-8"))
        return stamp.get("sha256") == sha256 and stamp.get("state") == _file_state(path)
    except (OSError, ValueError, AttributeError):
        return False


def remember_good(path, sha256):
    """Record that ``path`` has ``sha256`` now (see :func:`known_good`); silently skipped without a cache."""
    folder = cache_dir("verified")
    if folder is None:
        return
    try:
        write_json_atomic(_stamp_path(folder, path, sha256),
                          {"path": os.fsdecode(Path(path).resolve()), "sha256": sha256, "state": _file_state(path)})
    except OSError:
        pass
