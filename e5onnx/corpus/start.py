"""Where a corpus job starts: afresh, after the last complete shard of a killed run (``--resume``), or not at
all (the same job is complete, or an output would be overwritten without ``--force``)."""

import shutil

from ..errors import InvalidInputError
from .shards import kept_shards, partial_folder, read_run

#: The parts of a run manifest that make a job the same job: a resume with any other value is refused.
IDENTITY = {"model": ("variant", "sha256", "max_length", "dim"), "input": None, "settings": None}


def settle_output(out, job, resume, force):
    """The shards already done (list of shard entries, empty to start afresh) with ``OUT.partial`` ready for the
    rest, or the run manifest of ``out`` when it is a complete output of this same job and ``resume`` is set.

    Args:
        out: the output folder (Path); job: the new run's ``model``, ``input`` and ``settings`` (dict).

    Raises:
        InvalidInputError: ``out`` exists without ``resume``/``force``; a partial run exists without either;
            ``resume`` of a different job (the message names the first setting that differs).
    """
    partial = partial_folder(out)
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
                return kept_shards(partial, run["shards"])
            shutil.rmtree(partial)  # killed before its first manifest: nothing to keep
    partial.mkdir(parents=True)
    return []


def _check_same(run, job, where):
    for part, keys in IDENTITY.items():
        old, new = run.get(part) or {}, job[part]
        for key in keys or sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise InvalidInputError(
                    f"cannot resume {str(where)!r}: it was made with {part} {key} = {old.get(key)!r}, this run has "
                    f"{new.get(key)!r}; pass --force to start afresh")
