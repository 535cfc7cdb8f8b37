"""A corpus job's output folder: Parquet shards and the run manifest, written so that a kill loses at most the
shard in progress.

Layout of ``OUT`` (``pyarrow.parquet.read_table(OUT)`` reads the shards as one table, in order; it skips names
that start with ``_`` or ``.``)::

    OUT/part-00000.parquet ...   columns id (string), embedding (fixed_size_list<float32>[dim]), --keep columns
    OUT/_e5onnx_run.json         the run manifest (:data:`~e5onnx.config.CORPUS_RUN_FILE`)
    OUT/_rejects.jsonl           rows skipped by --on-error skip, if any

While it runs, the job writes into ``OUT.partial``: each shard to a hidden temporary name, fsynced, renamed,
and only then listed in the manifest (itself replaced atomically); the finished folder becomes ``OUT`` in one
step (:func:`~e5onnx.runtime.atomic.replace_folder`).
"""

import json
import os
import shutil

from ..config import (
    CORPUS_PARTIAL_SUFFIX,
    CORPUS_REJECTS_FILE,
    CORPUS_RUN_FILE,
    CORPUS_RUN_FORMAT,
    CORPUS_RUN_VERSION,
)
from ..errors import InvalidInputError
from ..runtime.atomic import write_binary_atomic, write_json_atomic, write_text_atomic
from ..runtime.manifest import sha256_file


def shard_name(index):
    """File name of shard ``index`` (0-based): ``part-00000.parquet``."""
    return f"part-{index:05d}.parquet"


def partial_folder(out):
    """Where the job writes while it runs: ``OUT.partial`` beside ``OUT``."""
    return out.with_name(out.name + CORPUS_PARTIAL_SUFFIX)


def shard_table(records, vectors, keep):
    """The pyarrow Table of one shard's good records.

    Args:
        records: the shard's good :class:`~e5onnx.corpus.records.Record`, in input order.
        vectors: ``(len(records), dim)`` float32.
        keep: names of the ``--keep`` columns (string columns, null where a record has none).
    """
    import pyarrow as pa

    dim = vectors.shape[1]
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    columns = {"id": pa.array([r.id for r in records], type=pa.string()),
               "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}
    for name in keep:
        columns[name] = pa.array([r.keep.get(name) for r in records], type=pa.string())
    return pa.table(columns)


def write_shard(folder, index, table):
    """Write ``table`` as shard ``index`` of ``folder`` atomically; returns ``(file name, sha256 hex)``."""
    import pyarrow.parquet as pq

    name = shard_name(index)
    write_binary_atomic(folder / name, lambda f: pq.write_table(table, f))
    return name, sha256_file(folder / name)


def read_run(folder):
    """The run manifest of ``folder`` (dict), or None when it has none.

    Raises:
        InvalidInputError: the file is not a corpus run manifest of this version.
    """
    path = folder / CORPUS_RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{str(path)!r} is not a readable corpus run manifest ({exc})") from None
    if not isinstance(run, dict) or run.get("format") != CORPUS_RUN_FORMAT or run.get("version") != CORPUS_RUN_VERSION:
        raise InvalidInputError(f"{str(path)!r} is not an e5onnx corpus run manifest (version {CORPUS_RUN_VERSION})")
    return run


def write_run(folder, run):
    """Replace the run manifest of ``folder`` atomically."""
    write_json_atomic(folder / CORPUS_RUN_FILE, run)


def kept_shards(folder, shards):
    """The leading shards of a run manifest's list whose files are intact (sha256 as recorded); every other
    file of ``folder`` that is not the run manifest (a shard written after the last manifest update, a
    temporary file of a killed write) is removed, so the job can continue after the last kept shard."""
    kept = []
    for shard in shards:
        path = folder / shard["file"]
        if not path.is_file() or sha256_file(path) != shard["sha256"]:
            break
        kept.append(shard)
    names = {s["file"] for s in kept} | {CORPUS_RUN_FILE}
    for path in folder.iterdir():
        if path.name not in names:
            shutil.rmtree(path) if path.is_dir() else os.unlink(path)
    return kept


def write_rejects(folder, shards):
    """``_rejects.jsonl`` from the shards' rejects (one JSON object per line: where, id, reason), when there
    are any; returns its name or None."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for s in shards for r in s["rejects"]]
    if not lines:
        return None
    write_text_atomic(folder / CORPUS_REJECTS_FILE, "".join(lines))
    return CORPUS_REJECTS_FILE


def shard_ids(folder, shards):
    """Every id of the listed shards, in order (list of str): the ``id`` columns read back."""
    import pyarrow.parquet as pq

    ids = []
    for shard in shards:
        ids += pq.read_table(folder / shard["file"], columns=["id"]).column("id").to_pylist()
    return ids
