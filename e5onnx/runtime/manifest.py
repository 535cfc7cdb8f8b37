"""The model folder's ``manifest.json``: reading, validating, hashing and atomic writing.

A model folder holds the ONNX variants (``model.onnx``, ``model_optimized.onnx``, ``model_int8.onnx``),
``tokenizer.json`` and ``manifest.json``. The manifest records the sha256 and size of every file, the
pooling/normalisation/prefix recipe and the parity results; it is shared by export (which writes it)
and runtime (which reads it).
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..config import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, ParityTolerances
from ..errors import IntegrityError, ModelFolderError
from .cache import known_good, remember_good

_CHUNK = 1 << 20


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory=False):
    """Permission bits a plain ``open``/``mkdir`` would give under the current umask (0o644 / 0o755 typically)."""
    return (0o777 if directory else 0o666) & ~_umask()


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder, names):
    """``{name: {"sha256", "size"}}`` (size in bytes) for the given files of ``folder``."""
    folder = Path(folder)
    return {n: {"sha256": sha256_file(folder / n), "size": (folder / n).stat().st_size} for n in sorted(names)}


def _write_atomic(path, mode, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then ``os.replace`` it to ``path``."""
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
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file, then ``os.replace``)."""
    _write_atomic(path, "w", lambda f: f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n"))


def write_text_atomic(path, text):
    """Write the str ``text`` (UTF-8) to ``path`` atomically (temporary file, then ``os.replace``)."""
    _write_atomic(path, "w", lambda f: f.write(text))


def write_npy_atomic(path, array):
    """Save ``array`` as ``.npy`` at ``path`` atomically (temporary file, then ``os.replace``)."""
    import numpy as np

    _write_atomic(path, "wb", lambda f: np.save(f, array))


def read_manifest(folder):
    """Read and sanity-check ``folder/manifest.json``.

    Raises:
        ModelFolderError: the file is missing, not JSON, or not an e5onnx manifest of a known version.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ModelFolderError(
            f"missing file {MANIFEST_FILE!r} in model folder {str(folder)!r}: not an e5onnx model folder "
            "(create one with `e5onnx export MODEL --output DIR`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{str(path)!r} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelFolderError(f"{str(path)!r} is not an e5onnx manifest (format != {MANIFEST_FORMAT!r})")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ModelFolderError(
            f"{str(path)!r} has format_version {manifest.get('format_version')!r}; "
            f"this e5onnx reads version {MANIFEST_VERSION}"
        )
    for key in ("files", "variants", "embedding_dim", "max_length"):
        if key not in manifest:
            raise ModelFolderError(f"{str(path)!r} lacks the required key {key!r}")
    problem = _shape_problem(manifest)
    if problem:
        raise ModelFolderError(f"{str(path)!r} is malformed: {problem}")
    return manifest


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _shape_problem(manifest):
    """What is wrong with the types of a manifest's required entries, or ``None``."""
    for key, minimum in (("embedding_dim", 1), ("max_length", 2)):
        if not _is_int(manifest[key], minimum):
            return f"{key} must be a whole number >= {minimum}, got {manifest[key]!r}"
    pad = manifest.get("pad_token_id")
    if pad is not None and not _is_int(pad, 0):
        return f"pad_token_id must be a whole number >= 0, got {pad!r}"
    files, variants = manifest["files"], manifest["variants"]
    if not isinstance(files, dict):
        return f"files must be an object, got {type(files).__name__}"
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _is_int(entry.get("size"), 0)):
            return f"files[{name!r}] must have a sha256 string and a size in bytes"
    if not isinstance(variants, dict) or not variants:
        return "variants must be a non-empty object"
    for name, entry in variants.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file", ""), str):
            return f"variants[{name!r}] must be an object with a 'file' name"
        if Path(entry.get("file", "x")).name != entry.get("file", "x"):
            return f"variants[{name!r}]['file'] must be a file name inside the folder, got {entry['file']!r}"
        if not isinstance(entry.get("parity", {}), dict):
            return f"variants[{name!r}]['parity'] must be an object"
    tolerances = manifest.get("tolerances", {})
    known = set(ParityTolerances.__dataclass_fields__)
    if not isinstance(tolerances, dict) or not set(tolerances) <= known:
        return f"tolerances must be an object with keys among {sorted(known)}"
    prefixes = manifest.get("prefixes", {})
    if not isinstance(prefixes, dict) or not all(isinstance(prefixes.get(k, ""), str) for k in ("query", "passage")):
        return "prefixes must be an object with 'query' and 'passage' strings"
    return None


def check_file(folder, name, manifest, verify_checksum=True):
    """Return ``folder/name`` after checking it exists and matches the manifest's size and sha256.

    A file verified before and unchanged since (same inode, size, mtime and ctime, recorded in the cache
    folder, :mod:`e5onnx.runtime.cache`) is not hashed again.

    Raises:
        ModelFolderError: the file is missing or not listed in the manifest.
        IntegrityError: its size or sha256 differs from the manifest (corrupt or tampered file).
    """
    folder = Path(folder)
    path = folder / name
    if not path.is_file():
        raise ModelFolderError(f"missing file {name!r} in model folder {str(folder)!r}")
    entry = manifest["files"].get(name)
    if entry is None:
        raise ModelFolderError(f"file {name!r} is not listed in {str(folder / MANIFEST_FILE)!r}")
    if verify_checksum:
        size = path.stat().st_size
        if size != entry["size"]:
            raise IntegrityError(
                f"{name!r} in {str(folder)!r} is {size} bytes but the manifest records {entry['size']}: "
                "the file is corrupt or was replaced; re-export or re-download the model"
            )
        if known_good(path, entry["sha256"]):  # verified before, unchanged since (inode, size, mtime, ctime)
            return path
        digest = sha256_file(path)
        if digest == entry["sha256"]:
            remember_good(path, digest)
        else:
            raise IntegrityError(
                f"{name!r} in {str(folder)!r} has sha256 {digest} but the manifest records "
                f"{entry['sha256']}: the file is corrupt or was replaced; re-export or re-download the model"
            )
    return path

