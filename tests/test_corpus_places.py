"""Where a corpus job writes, and how it stops: ``--force`` replaces only corpus outputs, an output path is checked as
the place it names, an input inside the output is refused, unwritable places and stray files get messages (no
traceback), a job that wrote no shard leaves nothing, an empty input still has the schema, a resume names a dropped
shard and the exact setting that differs, SIGTERM stops a job as Ctrl-C does. Found by a fresh user's trial."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pq = pytest.importorskip("pyarrow.parquet", reason="the corpus job needs the corpus extra (pyarrow)")

from e5onnx.cli import main
from e5onnx.config import CORPUS_RUN_FILE
from e5onnx.corpus import embed_corpus
from e5onnx.errors import InvalidInputError


def _src(tmp_path, n=12, name="c.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"text number {i} " * (1 + i % 20)}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def _run(model, src, out, **kwargs):
    return embed_corpus(str(model), [str(src)], out, **{"id_field": "_id", "quiet": True, "variant": "fp32", **kwargs})


def test_force_never_deletes_a_folder_that_is_not_a_corpus_output(tmp_path, tiny_export):
    src = _src(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match=r"'.*mine' exists and is not a corpus output .*neither --force"):
        _run(tiny_export, src, mine, force=True)
    assert (mine / "precious.txt").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(tiny_export, src, empty, force=True)["rows_written"] == 12  # an empty folder may be replaced


def test_an_input_inside_the_output_is_refused(tmp_path, tiny_export):
    out = tmp_path / "out"
    _run(tiny_export, _src(tmp_path), out)
    inside = _src(out, name="again.jsonl")
    with pytest.raises(InvalidInputError, match=r"--input '.*again\.jsonl' is inside the output place"):
        _run(tiny_export, inside, out, force=True)
    assert inside.is_file() and (out / CORPUS_RUN_FILE).is_file()


def test_a_file_at_the_output_is_never_replaced(tmp_path, tiny_export):
    src, target = _src(tmp_path), tmp_path / "p.txt"
    target.write_text("important")
    for kwargs in ({}, {"force": True}, {"resume": True}):
        with pytest.raises(InvalidInputError, match=r"the output '.*p\.txt' exists and is not a folder"):
            _run(tiny_export, src, target, **kwargs)
    # a path through a missing folder and '..' names the same file: refused too, and nothing is created
    with pytest.raises(InvalidInputError, match=r"the output '.*p\.txt' exists and is not a folder"):
        _run(tiny_export, src, f"{tmp_path}/missing/../p.txt")
    assert target.read_text() == "important" and not (tmp_path / "missing").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "p.txt"]


@pytest.mark.parametrize("where, message", [
    ("afile/sub", "cannot write the output '.*afile/sub': Not a directory"),
    ("/proc/e5onnx-out", "cannot write the output '/proc/e5onnx-out'"),
])
def test_an_unwritable_place_is_an_error_not_a_traceback(tmp_path, tiny_export, capsys, where, message):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / where if not where.startswith("/") else where
    code = main(["corpus", str(tiny_export), "-i", str(_src(tmp_path)), "-o", str(out), "-q", "--variant", "fp32"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_a_stray_file_at_the_partial_name_is_named(tmp_path, tiny_export):
    (tmp_path / "r.partial").write_text("x")
    for kwargs in ({}, {"resume": True}, {"force": True}):
        with pytest.raises(InvalidInputError, match=r"the partial-run folder '.*r\.partial' exists and is not a folder"):
            _run(tiny_export, _src(tmp_path), tmp_path / "r", **kwargs)


def test_a_job_that_fails_before_its_first_shard_leaves_nothing(tmp_path, tiny_export):
    with pytest.raises(Exception, match="Ray"):  # an unreachable cluster: refused at connect
        _run(tiny_export, _src(tmp_path), tmp_path / "out", ray="127.0.0.1:9")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_an_empty_input_gives_an_output_with_the_schema(tmp_path, tiny_export):
    src = tmp_path / "empty.jsonl"
    src.write_text("\n")
    manifest = _run(tiny_export, src, tmp_path / "out")
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 0 and table.column_names == ["id", "embedding"]
    assert manifest["rows_written"] == 0 and len(manifest["shards"]) == 1


def test_a_resume_names_a_dropped_shard_and_the_setting_that_differs(tmp_path, tiny_export, capsys):
    src, out = _src(tmp_path, 12), tmp_path / "out"
    whole = _run(tiny_export, src, out, shard_rows=4)
    os.rename(out, tmp_path / "out.partial")  # as if killed after its last shard
    with open(tmp_path / "out.partial" / "part-00001.parquet", "ab") as f:
        f.write(b"tampered")
    again = _run(tiny_export, src, out, shard_rows=4, resume=True)
    err = capsys.readouterr().err
    assert "warning: part-00001.parquet in" in err and "fails its sha256 check: the job continues from record 4" in err
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in whole["shards"]]
    os.rename(out, tmp_path / "out.partial")
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(InvalidInputError, match=r"made with input files\[0\] mtime_ns = \d+, this run has \d+;"):
        _run(tiny_export, src, out, shard_rows=4, resume=True)


def test_a_resume_of_a_complete_output_says_so(tmp_path, tiny_export, capsys):
    src, out = _src(tmp_path), tmp_path / "out"
    _run(tiny_export, src, out)
    _run(tiny_export, src, out, resume=True, quiet=False)
    assert "is already complete (12 rows): nothing to do" in capsys.readouterr().err


def test_sigterm_stops_a_job_as_ctrl_c_does(tmp_path, tiny_export):
    """SIGTERM once a shard is written: exit 143, the message says what is kept, and --resume finishes the job."""
    src, out = _src(tmp_path, 2000), tmp_path / "out"
    cmd = [sys.executable, "-m", "e5onnx.cli", "corpus", str(tiny_export), "-i", str(src), "-o", str(out), "-q",
           "--variant", "fp32", "--id-field", "_id", "--shard-rows", "256"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    manifest, deadline = tmp_path / "out.partial" / CORPUS_RUN_FILE, time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(manifest.read_text())["shards"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before its first shard: make the input longer"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "e5onnx corpus: interrupted;" in err and "rerun with --resume to continue" in err
    assert err.rstrip().endswith("interrupted (SIGTERM)")
    assert subprocess.run(cmd + ["--resume"], capture_output=True, timeout=300).returncode == 0
    assert pq.read_table(out).column("id").to_pylist() == [f"d{i}" for i in range(2000)]
