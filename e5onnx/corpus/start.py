"""Where a corpus job starts: afresh, after the last complete shard of a killed run (``--resume``), or not at
all (the same job is complete, or an output would be overwritten without ``--force``)."""

import shutil
from pathlib import Path

from ..config import CORPUS_RUN_FILE
from ..errors import InvalidInputError
from .shards import kept_shards, partial_folder, read_run

#: The parts of a run manifest that make a job the same job: a resume with any other value is refused.
IDENTITY = {"model": ("variant", "sha256", "max_length", "dim"), "input": None, "settings": None}


def settle_output(out, job, resume, force, warn=None):
    """The shards already done (list of shard entries, empty to start afresh) with ``OUT.partial`` ready for the
    rest, or the run manifest of ``out`` when it is a complete output of this same job and ``resume`` is set.

    ``force`` replaces only what a corpus job made: an output or partial run with a run manifest, or an empty
    folder; anything else at ``OUT`` (a file, a folder of other things) is refused, never deleted.

    Args:
        out: the output folder (absolute Path); job: the new run's ``model``, ``input`` and ``settings`` (dict).
        warn: called with a message (str) when a resume drops a listed shard that is missing or fails its sha256.

    Raises:
        InvalidInputError: ``out`` exists without ``resume``/``force``, or is not a corpus output; a partial run
            exists without either; an input file lies inside ``out`` or ``OUT.partial``; ``resume`` of a different
            job (the message names the first setting that differs); the output place cannot be written (its
            parent is a file, read-only, ...).
    """
    partial = partial_folder(out)
    _check_places(out, partial, job["input"].get("paths") or ())
    try:
        return _settle(out, partial, job, resume, force, warn)
    except OSError as exc:
        raise InvalidInputError(f"cannot write the output {str(out)!r}: {exc.strerror or exc}"
                                f"{f' ({exc.filename})' if exc.filename else ''}") from None


def _settle(out, partial, job, resume, force, warn):
    if out.exists() and not force:
        if not resume:
            raise InvalidInputError(f"output {str(out)!r} exists: pass --force to replace it (once the new "
                                    "output is complete) or --resume to finish the same job")
        run = read_run(out) if out.is_dir() else None
        if run is None:
            raise InvalidInputError(f"output {str(out)!r} exists and is not a corpus output: --resume has "
                                    "nothing to continue; pass --force to replace it")
        _check_same(run, job, out)
        if run.get("status") == "complete":
            return run
    if partial.exists():
        if force or not resume:
            if not force:
                raise InvalidInputError(f"a partial run is at {str(partial)!r} (killed or interrupted): pass "
                                        "--resume to continue it or --force to start afresh")
            shutil.rmtree(partial)
        else:
            run = read_run(partial)
            if run is not None:
                _check_same(run, job, partial)
                kept = kept_shards(partial, run["shards"])
                if len(kept) < len(run["shards"]) and warn is not None:
                    warn(f"{run['shards'][len(kept)]['file']} in {str(partial)!r} is missing or fails its sha256 "
                         f"check: the job continues from record {sum(s['records'] for s in kept):,} "
                         f"({len(kept)} of {len(run['shards'])} listed shards kept)")
                return kept
            shutil.rmtree(partial)  # killed before its first manifest: nothing to keep
    partial.mkdir(parents=True)
    return []


def _check_places(out, partial, inputs):
    """Refuse an output place the job must not touch: a file at ``OUT`` or ``OUT.partial``, a folder there that no
    corpus job made (``--force`` would delete it), or an input file inside either."""
    for place, what in ((out, "output"), (partial, "partial-run folder")):
        if place.exists() and not place.is_dir():
            raise InvalidInputError(f"the {what} {str(place)!r} exists and is not a folder: remove it or choose "
                                    "another --output")
        if place.is_dir() and read_run(place) is None and _holds_more_than_temporaries(place):
            raise InvalidInputError(f"the {what} {str(place)!r} exists and is not a corpus output (it has no "
                                    f"{CORPUS_RUN_FILE}): neither --force nor --resume touches it; remove it or "
                                    "choose another --output")
    for path in inputs:
        if path == "-":
            continue
        real = Path(path).resolve()
        for place in (out, partial):
            if real.is_relative_to(place.resolve()):
                raise InvalidInputError(f"--input {path!r} is inside the output place {str(place)!r}: write the "
                                        "output elsewhere")


def _holds_more_than_temporaries(folder):
    """True when ``folder`` holds anything but the hidden temporary files a killed job's atomic writes leave."""
    return any(not p.name.startswith(".") or not p.name.endswith(".tmp") for p in folder.iterdir())


def _check_same(run, job, where):
    for part, keys in IDENTITY.items():
        old, new = run.get(part) or {}, job[part]
        for key in keys or sorted(set(old) | set(new)):
            found = _difference(old.get(key), new.get(key), f"{part} {key}")
            if found:
                name, was, now = found
                raise InvalidInputError(f"cannot resume {str(where)!r}: it was made with {name} = {was!r}, this run "
                                        f"has {now!r}; pass --force to start afresh")


def _difference(old, new, name):
    """The first place where two manifest values differ: ``(name, old part, new part)``, or None when equal. Dicts
    and lists are entered, so the message names the leaf (``input files[0] mtime_ns``), not the whole record."""
    if old == new:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _difference(old.get(key), new.get(key), f"{name} {key}")
            if found:
                return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _difference(a, b, f"{name}[{i}]")
            if found:
                return found
    return name, old, new
