"""``embed_corpus``: a whole corpus embedded into Parquet shards, streaming, resumable, in one process or on Ray.

The job reads records in input order (:mod:`e5onnx.corpus.sources`), embeds them
:data:`~e5onnx.config.CORPUS_WINDOW_ROWS` at a time (length-sorted inside a window, put back in order, so memory
is bounded whatever the corpus size), and writes every ``shard_rows`` records as one Parquet shard
(:mod:`e5onnx.corpus.shards`). A killed job (SIGKILL included) leaves its finished shards in ``OUT.partial``;
``resume=True`` checks them and continues after the last one, so the output has the same rows and vectors as an
uninterrupted run: windows start at the same records (counted from each shard's start), so the same texts are
embedded together, in every variant and on Ray too.
"""

import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..config import (
    CORPUS_KINDS,
    CORPUS_ON_ERROR,
    CORPUS_SHARD_ROWS,
    CORPUS_WINDOW_ROWS,
    DEFAULT_BATCH_SIZE,
)
from ..errors import E5OnnxError, InvalidInputError
from ..runtime.arguments import whole_number
from ..runtime.atomic import replace_folder
from .duplicates import duplicate_ids
from .progress import Progress
from .records import bad_row_error
from .shards import partial_folder, shard_ids, write_rejects, write_run
from .sources import open_source
from .start import settle_output
from .writer import ShardWriter


def embed_corpus(model, inputs, output, *, variant="auto", threads=None, fmt=None, text_field="text",
                 title_field=None, id_field=None, keep=(), kind="passage", shard_rows=CORPUS_SHARD_ROWS,
                 resume=False, force=False, on_error="fail", quiet=False, ray=None, progress_stream=None):
    """Embed every record of ``inputs`` into the Parquet folder ``output``; returns the run manifest (dict).

    Args:
        model: exported model folder or Hub id (as :meth:`Embedder.load <e5onnx.runtime.Embedder.load>`).
        inputs: a path or a list of paths read in order as one input (``"-"``: standard input); formats and
            fields as :func:`~e5onnx.corpus.sources.open_source` (``fmt``, ``text_field``, ``title_field``,
            ``id_field``, ``keep``).
        kind: ``"passage"`` (default, adds ``passage: ``), ``"query"`` or ``"none"`` (texts as given).
        shard_rows: input records per Parquet shard (the unit a resume restarts from).
        resume: continue a killed run of the same job (same model, variant, input and settings; else refused);
            with nothing to resume, start afresh; a complete output of the same job is left as it is.
        force: start afresh, replacing ``output`` (only once the new output is complete) and any partial run.
        on_error: ``"fail"`` (default): the first bad row stops the job, naming its line/row and reason, and
            nothing is left at ``output`` (input files are checked before anything is embedded); ``"skip"``:
            bad rows are left out, listed in ``_rejects.jsonl`` and counted in the manifest.
        ray: None/False for this process; True or a cluster address (``"ray://host:10001"``, ``"auto"``) to
            run on Ray (:mod:`e5onnx.ray`: same output, ids and manifest).
        quiet: no progress on standard error.

    Returns:
        the run manifest written to ``output/_e5onnx_run.json``: model (id, sha256, variant, max length),
        input (paths, sizes, rows), settings, rows written and skipped, tokens, wall time (s), tokens/s,
        duplicate ids.

    Raises:
        InvalidInputError: bad arguments or input (a missing file, an unknown field, a bad row with
            ``on_error="fail"`` — the message names file, line or row, and reason), an existing output or partial
            run without ``resume``/``force``, or a resume of a different job (the message names what differs).
        ModelFolderError: the model cannot be loaded. E5OnnxError: inference or Ray failed (finished shards are
            kept for a resume).
    """
    started = time.perf_counter()
    out = Path(os.path.abspath(output))  # "a/missing/../b" is "a/b": the place checked is the place written
    kind, on_error, shard_rows = _check_args(kind, on_error, shard_rows, resume, force)
    source = open_source(inputs, fmt, text_field, title_field, id_field, keep)
    if resume and source.paths == ("-",):
        raise InvalidInputError("--resume needs input files: standard input cannot be read again")
    embedder, model_info = _load(model, variant, threads, ray)
    job = {"model": model_info, "input": source.describe(),
           "settings": {"kind": kind, "shard_rows": shard_rows, "on_error": on_error, "keep": list(keep),
                        "max_length": model_info["max_length"], "window_rows": CORPUS_WINDOW_ROWS,
                        "batch_size": DEFAULT_BATCH_SIZE}}
    total = _check_input(source, on_error)  # before anything is written
    done = settle_output(out, job, resume, force, warn=lambda message: _say(f"warning: {message}"))
    if isinstance(done, dict):
        if not quiet:
            _say(f"{out} is already complete ({done.get('rows_written', 0):,} rows): nothing to do")
        return done
    run = _run_manifest(job, done, total, ray)
    folder = partial_folder(out)
    write_run(folder, run)
    writer = ShardWriter(folder, run, model_info["dim"], list(keep), on_error)
    progress = Progress(total, writer.records, quiet, progress_stream)
    try:
        for window in _windows(embedder, model_info, source, writer.records, kind, shard_rows, threads, ray):
            writer.add(window)
            progress.update(len(window.records), window.tokens)
        writer.finish()
    except BaseException as exc:
        _stopped(exc, folder, run)
        raise
    finally:
        progress.close()
    return _complete(out, folder, run, started, progress, quiet)


def _say(message):
    print(message, file=sys.stderr, flush=True)


def _stopped(exc, folder, run):
    """Clean up after a job stopped by ``exc``: a bad row with ``on_error="fail"``, or a job that wrote no shard,
    leaves nothing (there is nothing to resume); otherwise the finished shards stay for ``--resume``, and an
    interruption or a write error says so. Raises E5OnnxError for an OSError (a full disk, a vanished input)."""
    if isinstance(exc, InvalidInputError) or not run["shards"]:
        shutil.rmtree(folder, ignore_errors=True)
        kept = None
    else:
        kept = (f"{len(run['shards'])} shards ({sum(s['records'] for s in run['shards']):,} records) are kept in "
                f"{str(folder)!r}: rerun with --resume to continue")
    if isinstance(exc, KeyboardInterrupt) and kept:
        _say(f"e5onnx corpus: interrupted; {kept}")
    if isinstance(exc, OSError):
        raise E5OnnxError(f"the corpus job stopped: {type(exc).__name__}: {exc}"
                          f"{f'; {kept}' if kept else ''}") from exc


def _check_args(kind, on_error, shard_rows, resume, force):
    if kind not in CORPUS_KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(CORPUS_KINDS)}, got {kind!r}")
    if on_error not in CORPUS_ON_ERROR:
        raise InvalidInputError(f"on_error must be one of {', '.join(CORPUS_ON_ERROR)}, got {on_error!r}")
    if resume and force:
        raise InvalidInputError("--resume and --force exclude each other: continue the run, or start afresh")
    return kind, on_error, whole_number("shard_rows", shard_rows)


def _load(model, variant, threads, ray):
    """``(Embedder or None, what the run manifest records of the model)``. For Ray the driver only resolves the
    folder and variant and checks the files (:func:`~e5onnx.runtime.folder.resolve_model`): the actors load the
    sessions, so the driver's cores and memory are not spent on a session of its own."""
    from ..runtime.embedder import Embedder
    from ..runtime.folder import resolve_model

    found = resolve_model(model, variant)
    embedder = None if ray else Embedder(found.model_path, found.tokenizer_path, max_length=found.max_length,
                                         threads=threads, pad_token_id=found.manifest.pad_token_id,
                                         variant=found.variant, manifest=found.manifest)
    path, manifest = Path(found.model_path), found.manifest
    source = manifest.source
    return embedder, {"model": str(model), "folder": str(path.parent), "hub_id": source.id if source else None,
                      "file": path.name, "sha256": manifest.files[path.name].sha256, "variant": found.variant,
                      "max_length": found.max_length, "dim": embedder.dim if embedder else manifest.embedding_dim}


def _check_input(source, on_error):
    """The number of records of the input files (None for standard input), read once before any embedding;
    with ``on_error="fail"`` the first bad row raises here."""
    if source.paths == ("-",):
        return None
    count = 0
    for record in source.records():
        if not record.ok and on_error == "fail":
            raise bad_row_error(record)
        count += 1
    return count


def _run_manifest(job, done, total, ray):
    from ..config import CORPUS_RUN_FORMAT, CORPUS_RUN_VERSION

    return {"format": CORPUS_RUN_FORMAT, "version": CORPUS_RUN_VERSION, "status": "running", **job,
            "input_records": total, "backend": "ray" if ray else "local",
            "ray_address": ray if isinstance(ray, str) else None, "e5onnx_version": __version__,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shards": done}


def _windows(embedder, model_info, source, start, kind, shard_rows, threads, ray):
    """The job's Windows from record ``start`` on, windows cut at the same records whatever the backend and start
    (:func:`~e5onnx.corpus.local.windows_of`), so a resumed or Ray run embeds the same texts together."""
    prefix = None if kind == "none" else kind
    if not ray:
        from .local import local_windows

        return local_windows(embedder, source.records(start), CORPUS_WINDOW_ROWS, prefix, DEFAULT_BATCH_SIZE,
                             shard_rows)
    try:
        from ..ray.windows import ray_windows
    except ImportError as exc:
        raise E5OnnxError(f"--ray needs Ray: pip install 'e5onnx[ray]' ({exc})") from None
    return ray_windows(source, start, model_info["folder"], model_info["variant"], prefix, CORPUS_WINDOW_ROWS,
                       address=ray if isinstance(ray, str) else None, threads=threads, shard_rows=shard_rows)


def _complete(out, folder, run, started, progress, quiet):
    """Write the final manifest (totals, duplicates, rejects) and put the folder in place of ``out``."""
    shards = run["shards"]
    run["status"] = "complete"
    run["rows_written"] = sum(s["rows"] for s in shards)
    run["rows_skipped"] = sum(len(s["rejects"]) for s in shards)
    run["rejects_file"] = write_rejects(folder, shards)
    run["tokens"] = sum(s["tokens"] for s in shards)
    run["duplicate_ids"] = duplicate_ids(lambda: (shard_ids(folder, [s]) for s in shards))
    run["wall_time_s"] = round(time.perf_counter() - started, 3)
    run["tokens_per_s"] = round(progress.tokens / run["wall_time_s"], 1) if run["wall_time_s"] else None
    run["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_run(folder, run)
    replace_folder(folder, out)
    if not quiet:
        dup = run["duplicate_ids"]
        if dup["count"]:
            shown = ", ".join(repr(d["id"]) for d in dup["examples"])
            print(f"warning: {dup['count']} ids occur more than once (e.g. {shown}); see duplicate_ids in "
                  f"{out}/_e5onnx_run.json", file=sys.stderr)
        print(f"wrote {run['rows_written']:,} rows ({run['rows_skipped']:,} skipped) to {out}: "
              f"{run['tokens']:,} tokens in {run['wall_time_s']:.1f} s", file=sys.stderr)
    return run

