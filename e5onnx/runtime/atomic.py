"""Atomic file writing: a temporary file beside the target, fsync, then ``os.replace``, so a reader (or a crash)
never sees a half-written file. Used for model manifests, ``.npy`` outputs, caches and benchmark results."""

import json
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory=False):
    """Permission bits a plain ``open``/``mkdir`` would give under the current umask (0o644 / 0o755 typically)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _write_atomic(path, mode, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then ``os.replace`` it to ``path``.

    Raises:
        OSError: the folder is not writable, the disk is full, ...; the temporary file is removed and ``path``
            keeps its old content. Whatever ``write`` raises, likewise.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, default_mode())  # mkstemp creates 0o600
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path, data):
    """Write ``data`` as indented UTF-8 JSON to ``path`` atomically (see the module docstring)."""
    _write_atomic(path, "w", lambda f: f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n"))


def write_text_atomic(path, text):
    """Write the str ``text`` (UTF-8) to ``path`` atomically."""
    _write_atomic(path, "w", lambda f: f.write(text))


def write_npy_atomic(path, array):
    """Save ``array`` as ``.npy`` at ``path`` atomically."""
    import numpy as np

    _write_atomic(path, "wb", lambda f: np.save(f, array))
