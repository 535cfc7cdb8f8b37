"""Atomic writing: a temporary file beside the target, fsync, then ``os.replace``, so a reader (or a crash)
never sees a half-written file (model manifests, ``.npy`` outputs, caches, benchmark results, corpus shards);
and a finished folder put in place of an old one in one step (:func:`replace_folder`: exports, corpus outputs)."""

import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
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


def write_binary_atomic(path, write):
    """Call ``write(file)`` on a binary file that becomes ``path`` atomically (e.g. ``pyarrow.parquet.write_table``)."""
    _write_atomic(path, "wb", write)


def write_npy_atomic(path, array):
    """Save ``array`` as ``.npy`` at ``path`` atomically."""
    import numpy as np

    _write_atomic(path, "wb", lambda f: np.save(f, array))


@contextmanager
def signals_deferred():
    """Hold SIGTERM and SIGINT while the block runs (main thread only): a signal that comes meanwhile is recorded,
    and once the block is done the handler that was in place gets it (e.g. one that raises
    ``SystemExit``). Python handlers run only in the main thread, so no thread of torch or onnxruntime can
    interrupt the block either.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for signum in dict.fromkeys(caught):
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler != signal.SIG_IGN:  # SIG_DFL, or a handler not set from Python: the default action
                signal.raise_signal(signum)

_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working folder
_RENAME_EXCHANGE = 2  # <linux/fs.h>


def exchange(a, b):
    """Swap the folders at paths ``a`` and ``b`` in one atomic step: Linux ``renameat2(RENAME_EXCHANGE)``
    (glibc 2.28+). Returns True when swapped, False where the system or file system cannot (nothing changed).

    Raises:
        OSError: the swap itself failed (a missing path, permissions).
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):  # not Linux/glibc (macOS, Windows, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(tmp, output):
    """Move the finished folder ``tmp`` to ``output``; an existing ``output`` is replaced only in this step.

    ``output`` holds the old folder or the new one at every moment: the two are swapped in one atomic step where
    the system can (:func:`exchange`), else by two renames (the old folder moved aside first, put back if the
    second fails); the old folder is then removed. SIGTERM / Ctrl-C are held until that is done
    (:func:`signals_deferred`), then handled.

    Raises:
        OSError: a rename failed (``output`` keeps the old folder).
    """
    tmp, output = Path(tmp), Path(output)
    with signals_deferred():
        if not output.exists():
            os.rename(tmp, output)
        elif exchange(tmp, output):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
        else:
            backup = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            backup.rmdir()
            os.rename(output, backup)
            try:
                os.rename(tmp, output)
            except BaseException:
                os.rename(backup, output)
                raise
            shutil.rmtree(backup, ignore_errors=True)
