"""The corpus job (``e5onnx corpus`` / :func:`e5onnx.corpus.embed_corpus`): output equal to the Embedder's, resume
after SIGKILL, bad rows, refusals, duplicates, bounded memory."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet", reason="the corpus job needs the corpus extra (pyarrow)")

from e5onnx.cli import main
from e5onnx.config import CORPUS_RUN_FILE, shared_dir
from e5onnx.corpus import embed_corpus
from e5onnx.errors import InvalidInputError
from e5onnx.runtime import Embedder

SCIFACT = shared_dir() / "data" / "scifact" / "corpus.part1.jsonl"
WORDS = ["the", "cell", "membrane", "regulates", "transport", "of", "ions", "and", "small", "molecules", "across", "a", "lipid", "bilayer"]


def corpus_rows(n, seed=0):
    """``n`` BEIR-shaped rows of varied length: SciFact's first ``n`` documents when ../shared is present."""
    if SCIFACT.is_file():
        with SCIFACT.open(encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(n), f)]
        if len(rows) == n:
            return rows
    rng = np.random.default_rng(seed)
    return [{"_id": f"d{i}", "title": f"title {i}", "text": " ".join(rng.choice(WORDS, rng.integers(3, 200)))}
            for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_output(out):
    table = pq.read_table(out)
    return table.column("id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def run(model, src, out, **kwargs):
    kwargs = {"id_field": "_id", "title_field": "title", "quiet": True, "variant": "fp32", **kwargs}
    return embed_corpus(str(model), [str(src)], out, **kwargs)


@pytest.fixture(scope="module")
def rows():
    return corpus_rows(300)


def test_output_equals_embed_passages(tmp_path, tiny_export, rows):
    src = write_jsonl(tmp_path / "corpus.jsonl", rows)
    manifest = run(tiny_export, src, tmp_path / "out", shard_rows=128)
    ids, vectors = read_output(tmp_path / "out")
    expected = Embedder.load(str(tiny_export), "fp32").embed_passages([r["title"] + " " + r["text"] for r in rows])
    assert ids == [r["_id"] for r in rows]
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert float(np.abs(vectors - expected).max()) <= 1e-6
    assert [s["records"] for s in manifest["shards"]] == [128, 128, 44]
    assert manifest["rows_written"] == 300 and manifest["rows_skipped"] == 0 and manifest["status"] == "complete"
    assert manifest["input_records"] == 300 and manifest["tokens"] > 300 * 2
    assert not (tmp_path / "out.partial").exists()


def test_schema_and_keep_columns(tmp_path, tiny_export):
    import pyarrow as pa

    rows = [{"_id": "a", "title": "", "text": "first text", "url": "u1", "n": 3},
            {"_id": "b", "text": "second", "url": None}]
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    run(tiny_export, src, tmp_path / "out", keep=("url", "n", "text", "title", "_id"))
    table = pq.read_table(tmp_path / "out")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)  # the tiny BERT is 32 wide
    assert table.column_names == ["id", "embedding", "url", "n", "text", "title", "_id"]
    assert table.column("url").to_pylist() == ["u1", None]
    assert table.column("n").to_pylist() == ["3", None]
    # the fields in a role may be kept too, as they are in the input (not the "title text" that was embedded)
    assert table.column("text").to_pylist() == ["first text", "second"]
    assert table.column("title").to_pylist() == ["", None] and table.column("_id").to_pylist() == ["a", "b"]


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_sigkill_then_resume_gives_the_uninterrupted_output(tmp_path, tiny_export, rows, variant):
    """Bit for bit, int8 included: a resumed run embeds the same texts together (windows restart at shard ends)."""
    src = write_jsonl(tmp_path / "corpus.jsonl", rows * 4)
    args = [sys.executable, "-m", "e5onnx.cli", "corpus", str(tiny_export), "--input", str(src), "--variant", variant,
            "--id-field", "_id", "--title-field", "title", "--shard-rows", "100", "--quiet", "--output"]
    assert subprocess.run(args + [str(tmp_path / "whole")], capture_output=True, check=False).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest, deadline = out.with_name("killed.partial") / CORPUS_RUN_FILE, time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():
        pytest.skip("the run finished before it could be killed")
    done = json.loads(manifest.read_text())["shards"]
    stamps = {s["file"]: os.stat(out.with_name("killed.partial") / s["file"]).st_mtime_ns for s in done}
    resumed = subprocess.run(args + [str(out), "--resume"], capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    ids, vectors = read_output(out)
    whole_ids, whole = read_output(tmp_path / "whole")
    assert ids == whole_ids and len(ids) == 1200
    assert np.array_equal(vectors, whole)
    assert {f: os.stat(out / f).st_mtime_ns for f in stamps} == stamps  # the finished shards were not redone


def test_bad_row_fails_and_leaves_nothing(tmp_path, tiny_export):
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": ""}\n{"_id": "3", "text": "x"}\n')
    with pytest.raises(InvalidInputError, match=r"c\.jsonl line 2: empty text"):
        run(tiny_export, src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_bad_rows_skipped_are_listed(tmp_path, tiny_export):
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "1", "text": "fine"}\nnot json\n{"_id": "3", "txt": "x"}\n{"_id": "4", "text": 5}\n'
                   '{"_id": "5", "text": "also fine"}\n')
    manifest = run(tiny_export, src, tmp_path / "out", on_error="skip", title_field=None)
    ids, _ = read_output(tmp_path / "out")
    assert ids == ["1", "5"]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejects] == [f"{src} line {n}" for n in (2, 3, 4)]
    assert rejects[0]["reason"].startswith("not JSON")
    assert rejects[1]["reason"] == "field 'text' is missing"
    assert [r["id"] for r in rejects] == [None, "3", "4"]  # an unreadable row has no id, not its position
    assert manifest["rows_skipped"] == 3 and manifest["rows_written"] == 2


def test_lone_surrogate_from_a_json_escape_is_a_bad_row(tmp_path, tiny_export):
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": "bad \\ud800 text"}\n')
    manifest = run(tiny_export, src, tmp_path / "out", on_error="skip", title_field=None)
    assert read_output(tmp_path / "out")[0] == ["1"]
    assert manifest["shards"][0]["rejects"][0]["id"] == "2"
    assert manifest["shards"][0]["rejects"][0]["reason"].startswith("field 'text': lone surrogate")


def test_existing_output_needs_force_or_resume(tmp_path, tiny_export, rows):
    src = write_jsonl(tmp_path / "c.jsonl", rows[:20])
    out = tmp_path / "out"
    first = run(tiny_export, src, out)
    with pytest.raises(InvalidInputError, match="exists: pass --force"):
        run(tiny_export, src, out)
    assert run(tiny_export, src, out, resume=True)["finished_at"] == first["finished_at"]  # complete: untouched
    with pytest.raises(InvalidInputError, match="cannot resume .* settings kind = 'passage', this run has 'query'"):
        run(tiny_export, src, out, resume=True, kind="query")
    again = run(tiny_export, src, out, force=True, kind="query")
    assert again["settings"]["kind"] == "query" and read_output(out)[0] == [r["_id"] for r in rows[:20]]


def test_partial_run_needs_resume_or_force(tmp_path, tiny_export, rows):
    src = write_jsonl(tmp_path / "c.jsonl", rows[:20])
    (tmp_path / "out.partial").mkdir()
    with pytest.raises(InvalidInputError, match="a partial run is at .*--resume to continue it or --force"):
        run(tiny_export, src, tmp_path / "out")
    assert run(tiny_export, src, tmp_path / "out", resume=True)["rows_written"] == 20  # no manifest: afresh


def test_resume_with_another_variant_is_refused(tmp_path, tiny_export, rows):
    src = write_jsonl(tmp_path / "c.jsonl", rows[:20])
    run(tiny_export, src, tmp_path / "out")
    with pytest.raises(InvalidInputError, match="model variant = 'fp32', this run has 'int8'"):
        run(tiny_export, src, tmp_path / "out", resume=True, variant="int8")


def test_duplicate_ids_are_reported(tmp_path, tiny_export, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"_id": i, "text": f"text {n}"}) + "\n" for n, i in enumerate("abab c")))
    manifest = run(tiny_export, src, tmp_path / "out", title_field=None, quiet=False)
    assert manifest["duplicate_ids"] == {"count": 2, "examples": [{"id": "a", "rows": 2}, {"id": "b", "rows": 2}]}
    assert "2 ids occur more than once" in capsys.readouterr().err


def test_txt_from_stdin_with_row_number_ids(tmp_path, tiny_export, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one text\nanother text\n")))
    assert main(["corpus", str(tiny_export), "--input", "-", "--output", str(tmp_path / "out"), "--quiet",
                 "--variant", "fp32", "--kind", "none"]) == 0
    ids, vectors = read_output(tmp_path / "out")
    assert ids == ["1", "2"]
    expected = Embedder.load(str(tiny_export), "fp32").embed(["one text", "another text"])
    assert float(np.abs(vectors - expected).max()) <= 1e-6


def test_resume_from_stdin_is_refused(tmp_path, tiny_export):
    with pytest.raises(InvalidInputError, match="standard input cannot be read again"):
        embed_corpus(str(tiny_export), ["-"], tmp_path / "out", resume=True)


def test_progress_lines_when_not_a_terminal(tmp_path, tiny_export, rows, monkeypatch):
    import io

    from e5onnx.corpus import progress

    monkeypatch.setattr(progress, "CORPUS_LOG_EVERY_S", 0.0)
    stream = io.StringIO()
    run(tiny_export, write_jsonl(tmp_path / "c.jsonl", rows[:40]), tmp_path / "out", quiet=False,
        progress_stream=stream, shard_rows=10)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "e5onnx corpus: 40 rows to embed"  # at once, before the first window
    assert lines[-1].startswith("e5onnx corpus: 40/40 rows (100.0 %), ") and "tokens/s, ETA 0m00s" in lines[-1]


def test_cli_usage_errors_exit_2(tmp_path, tiny_export, capsys):
    for extra in (["--shard-rows", "0"], ["--on-error", "ignore"], ["--resume", "--force"]):
        with pytest.raises(SystemExit) as info:
            main(["corpus", str(tiny_export), "--input", "x.jsonl", "--output", str(tmp_path / "o"), *extra])
        assert info.value.code == 2


def test_missing_input_file_is_named(tmp_path, tiny_export, capsys):
    assert main(["corpus", str(tiny_export), "--input", str(tmp_path / "nope.jsonl"), "--output",
                 str(tmp_path / "o")]) == 1
    assert "nope.jsonl" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_memory_stays_bounded_on_100k_rows(tmp_path, tiny_export):
    """Peak RSS of the job on 100,000 rows against 10,000: streaming keeps it within 30 MB (the input file
    alone is 4.5 MB; held as Python records it would be over 60 MB)."""
    def peak_mb(n):
        src = tmp_path / f"c{n}.txt"
        src.write_text("".join(f"short text number {i}\n" for i in range(n)))
        code = ("import resource, sys; from e5onnx.cli import main; rc = main(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
        done = subprocess.run([sys.executable, "-c", code, "corpus", str(tiny_export), "--input", str(src),
                               "--output", str(tmp_path / f"o{n}"), "--quiet", "--variant", "fp32"],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1]) / 1024
    assert peak_mb(100_000) - peak_mb(10_000) < 30


def test_lone_surrogate_in_an_id_is_a_bad_row_not_a_parquet_crash(tmp_path, tiny_export):
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "\\udc00", "text": "fine"}\n{"_id": "2", "text": "also fine"}\n')
    with pytest.raises(InvalidInputError, match=r"line 1: field '_id': lone surrogate"):
        run(tiny_export, src, tmp_path / "out", title_field=None)
    manifest = run(tiny_export, src, tmp_path / "out", title_field=None, on_error="skip")
    assert read_output(tmp_path / "out")[0] == ["2"] and manifest["rows_skipped"] == 1


def test_windows_end_at_window_multiples_and_shard_ends_whatever_the_start():
    from e5onnx.corpus.local import windows_of
    from e5onnx.corpus.records import Record

    def sizes(start, stop, window_rows, shard_rows):
        records = (Record(i, f"line {i + 1}", str(i + 1), "t") for i in range(start, stop))
        return [[r.ordinal for r in w][::len(w) - 1 or 1] for w in windows_of(records, window_rows, shard_rows)]

    # shards of 10 records, windows of 4 counted from each shard's start: 0-3, 4-7, 8-9 | 10-13, 14-17, 18-19 | ...
    assert sizes(0, 23, 4, 10) == [[0, 3], [4, 7], [8, 9], [10, 13], [14, 17], [18, 19], [20, 22]]
    assert sizes(10, 23, 4, 10) == sizes(0, 23, 4, 10)[3:]  # a resume at a shard start: the same windows
    assert sizes(5, 12, 4, None) == [[5, 7], [8, 11]]  # one shard: multiples of 4 from record 0
