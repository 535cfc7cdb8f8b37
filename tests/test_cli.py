"""The ``e5onnx`` command line: round trips against the API, input files, error exits and usage errors.

Most commands run in-process through :func:`e5onnx.cli.main` (fast); a few run the real program in a
subprocess (``python -m e5onnx.cli`` and the installed ``e5onnx`` console script). All use ``tiny_export``,
so nothing from ../shared is needed.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from e5onnx.cli import main
from e5onnx.runtime.embedder import Embedder

CONSOLE_SCRIPT = Path(sys.executable).parent / "e5onnx"
LONG = " ".join(["hello", "world", "paris", "city"] * 50)  # 200 one-token words -> 202 tokens


@pytest.fixture(scope="module")
def fp32(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def manifest(tiny_export):
    return json.loads((tiny_export / "manifest.json").read_text(encoding="utf-8"))


def run_cli(capsys, *argv):
    """Run ``main(argv)`` in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse_jsonl(out, dim):
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert set(r) == {"index", "embedding"}
        assert len(r["embedding"]) == dim
    return np.array([r["embedding"] for r in rows], dtype=np.float64).reshape(len(rows), dim)


def run_program(args, input=None, timeout=60):
    env = dict(os.environ, HF_HUB_OFFLINE="1", E5ONNX_THREADS="1")
    return subprocess.run([str(a) if not isinstance(a, bytes) else a for a in args], input=input,
                          capture_output=True, timeout=timeout, env=env)


# ------------------------------------------------------------------------------------------ embed: texts


def test_embed_texts_as_arguments(capsys, tiny_export, fp32):
    texts = ["hello world", "paris is the capital of france", ""]
    code, out, err = run_cli(capsys, "embed", tiny_export, *texts, "--variant", "fp32")
    assert code == 0, err
    got = parse_jsonl(out, fp32.dim)
    assert got.shape == (3, fp32.dim)
    assert np.max(np.abs(got - fp32.embed(texts))) < 1e-6


def test_embed_texts_after_options(capsys, tiny_export, fp32):
    texts = ["hello world", "paris is the capital of france"]
    code, out, err = run_cli(capsys, "embed", tiny_export, "--variant", "fp32", texts[0], "--threads", "1", texts[1])
    assert code == 0, err
    assert np.max(np.abs(parse_jsonl(out, fp32.dim) - fp32.embed(texts))) < 1e-6
    with pytest.raises(SystemExit) as info:
        main(["embed", str(tiny_export), "hello", "--no-such-option"])
    assert info.value.code == 2 and "--no-such-option" in capsys.readouterr().err


def test_embed_default_variant_is_auto(capsys, tiny_export):
    auto = Embedder.load(tiny_export, threads=1)
    code, out, err = run_cli(capsys, "embed", tiny_export, "hello", "world")
    assert code == 0, err
    assert np.max(np.abs(parse_jsonl(out, auto.dim) - auto.embed(["hello", "world"]))) < 1e-6


def test_embed_no_texts_is_a_usage_error(capsys, tiny_export):
    with pytest.raises(SystemExit) as info:
        main(["embed", str(tiny_export), "--variant", "fp32"])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "needs TEXT arguments or --input" in captured.err
    assert captured.err.startswith("usage: e5onnx embed ")  # the subcommand's usage, not the top-level one


def test_embed_variant_int8(capsys, tiny_export):
    int8 = Embedder.load(tiny_export, variant="int8", threads=1)
    assert int8.variant == "int8"
    texts = ["hello world", "robots"]
    code, out, err = run_cli(capsys, "embed", tiny_export, *texts, "--variant", "int8")
    assert code == 0, err
    assert np.max(np.abs(parse_jsonl(out, int8.dim) - int8.embed(texts))) < 1e-6


@pytest.mark.parametrize("flag, method", [("--query", "embed_queries"), ("--passage", "embed_passages")])
def test_embed_prefix_flags(capsys, tiny_export, fp32, flag, method):
    texts = ["x", "query: x", "passage: x", "  QUERY:y"]
    code, out, err = run_cli(capsys, "embed", tiny_export, *texts, flag, "--variant", "fp32")
    assert code == 0, err
    got = parse_jsonl(out, fp32.dim)
    assert np.max(np.abs(got - getattr(fp32, method)(texts))) < 1e-6
    # and differs from the unprefixed embedding of "x"
    assert np.max(np.abs(got[0] - fp32.embed(["x"])[0])) > 1e-4


def test_query_and_passage_together_is_usage_error(tiny_export):
    with pytest.raises(SystemExit) as info:
        main(["embed", str(tiny_export), "x", "--query", "--passage"])
    assert info.value.code == 2


def test_embed_long_text_truncated_by_default(capsys, tiny_export, fp32):
    code, out, err = run_cli(capsys, "embed", tiny_export, "hi", LONG, "--variant", "fp32")
    assert code == 0, err
    assert np.max(np.abs(parse_jsonl(out, fp32.dim) - fp32.embed(["hi", LONG]))) < 1e-6


def test_embed_no_truncate_refuses_long_text(capsys, tiny_export):
    code, out, err = run_cli(capsys, "embed", tiny_export, "hi", LONG, "--variant", "fp32", "--no-truncate")
    assert code == 1
    assert out == ""  # nothing printed before the refusal
    assert err.startswith("error: ")
    assert "texts[1]" in err
    assert "202 tokens" in err
    assert "max_length 128" in err


def test_embed_batch_size_one(capsys, tiny_export, fp32):
    texts = ["hello world", LONG, "", "city"]
    code, out, err = run_cli(capsys, "embed", tiny_export, *texts, "--variant", "fp32", "--batch-size", "1")
    assert code == 0, err
    assert np.max(np.abs(parse_jsonl(out, fp32.dim) - fp32.embed(texts))) < 1e-6


# ----------------------------------------------------------------------------------------- embed: --input


def test_embed_input_file_lines(capsys, tmp_path, tiny_export, fp32):
    path = tmp_path / "texts.txt"
    # CRLF line, empty line in the middle, trailing newline: 4 lines -> 4 texts
    path.write_bytes(b"hello world\r\nthe city\n\nparis caf\xc3\xa9\n")
    expected_texts = ["hello world", "the city", "", "paris café"]
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 0, err
    got = parse_jsonl(out, fp32.dim)
    assert got.shape == (4, fp32.dim)
    assert np.max(np.abs(got - fp32.embed(expected_texts))) < 1e-6


def test_embed_input_file_without_trailing_newline(capsys, tmp_path, tiny_export, fp32):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"hello\nworld")
    code, out, err = run_cli(capsys, "embed", tiny_export, "-i", path, "--variant", "fp32")
    assert code == 0, err
    assert np.max(np.abs(parse_jsonl(out, fp32.dim) - fp32.embed(["hello", "world"]))) < 1e-6


def test_embed_input_blank_lines_are_texts(capsys, tmp_path, tiny_export, fp32):
    path = tmp_path / "blank.txt"
    path.write_bytes(b"\n\n  \n")  # three lines: "", "", "  "
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 0, err
    got = parse_jsonl(out, fp32.dim)
    assert got.shape == (3, fp32.dim)
    assert np.max(np.abs(got - fp32.embed(["", "", "  "]))) < 1e-6


def test_embed_empty_input_file(capsys, tmp_path, tiny_export):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 0, err
    assert out == ""


def test_embed_input_jsonl(capsys, tmp_path, tiny_export, fp32):
    path = tmp_path / "texts.jsonl"
    texts = ["hello world", "line\nbreak inside", "", "東京"]
    lines = [json.dumps({"text": texts[0], "id": 7}), json.dumps({"text": texts[1]}),
             json.dumps(texts[2]), json.dumps({"text": texts[3]}, ensure_ascii=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 0, err
    got = parse_jsonl(out, fp32.dim)
    assert got.shape == (4, fp32.dim)
    assert np.max(np.abs(got - fp32.embed(texts))) < 1e-6


@pytest.mark.parametrize("line, reason", [
    (b"not json", "line 2: not JSON"),
    (b'{"txt": "x"}', "line 2: expected a JSON string or an object with a 'text' string; the object has keys 'txt'"),
    (b'{"text": 5}', "line 2: expected a JSON string or an object with a 'text' string; its 'text' is a JSON number"),
    (b"42", "line 2: expected a JSON string or an object with a 'text' string; got a JSON number"),
    (b'{"text": "x", "text": "y"}', "line 2: a JSON object has the key 'text' twice"),
])
def test_embed_input_bad_jsonl(capsys, tmp_path, tiny_export, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n' + line + b"\n")
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 1
    assert out == ""
    assert reason in err
    assert str(path) in err


def test_embed_input_jsonl_skips_blank_lines(capsys, tmp_path, tiny_export, fp32):
    path = tmp_path / "texts.jsonl"
    path.write_bytes(b'{"text": "hello world"}\n\n   \n{"text": "the city"}\n\n')  # trailing blank line too
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 0, err
    got = parse_jsonl(out, fp32.dim)
    assert got.shape == (2, fp32.dim)
    assert np.max(np.abs(got - fp32.embed(["hello world", "the city"]))) < 1e-6


def test_embed_jsonl_error_names_the_file_line_after_blank_lines(capsys, tmp_path, tiny_export):
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"text": "hi"}) + "\n\n\n" + json.dumps({"text": LONG}) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "embed", tiny_export, "-i", path, "--variant", "fp32", "--no-truncate")
    assert code == 1 and out == ""
    assert "texts[1]: 202 tokens" in err and f"(line 4 of {path})" in err


def test_embed_input_jsonl_lone_surrogate(capsys, tmp_path, tiny_export):
    # JSON can spell a lone surrogate ("\ud800") in valid UTF-8; the API refuses it, naming the text's index.
    path = tmp_path / "sur.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "bad \\ud800"}\n', encoding="utf-8")
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 1
    assert out == ""
    assert "texts[1]" in err and "surrogate" in err


def test_embed_output_npy(capsys, tmp_path, tiny_export, fp32):
    texts = ["hello world", "", LONG, "paris"]
    npy = tmp_path / "vectors.npy"
    code, out, err = run_cli(capsys, "embed", tiny_export, *texts, "--output", npy, "--variant", "fp32")
    assert code == 0, err
    assert out == ""  # vectors go to the file, not stdout
    assert f"wrote 4 x {fp32.dim} float32" in err
    arr = np.load(npy)
    assert arr.shape == (4, fp32.dim)
    assert arr.dtype == np.float32
    assert np.max(np.abs(arr - fp32.embed(texts))) < 1e-6
    assert not [p for p in tmp_path.iterdir() if p.name != "vectors.npy"]  # no temporary left behind


def test_embed_input_and_output_npy_with_query(capsys, tmp_path, tiny_export, fp32):
    src = tmp_path / "q.txt"
    src.write_text("x\nquery: y\n\n", encoding="utf-8")
    npy = tmp_path / "q.npy"
    code, _, err = run_cli(capsys, "embed", tiny_export, "--input", src, "-o", npy, "--query", "--variant", "fp32")
    assert code == 0, err
    arr = np.load(npy)
    assert arr.shape == (3, fp32.dim)
    assert np.max(np.abs(arr - fp32.embed_queries(["x", "query: y", ""]))) < 1e-6


def test_embed_empty_input_to_npy(capsys, tmp_path, tiny_export, fp32):
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    npy = tmp_path / "e.npy"
    code, _, err = run_cli(capsys, "embed", tiny_export, "--input", src, "-o", npy, "--variant", "fp32")
    assert code == 0, err
    arr = np.load(npy)
    assert arr.shape == (0, fp32.dim) and arr.dtype == np.float32


def test_embed_output_into_missing_folder_exit_1(capsys, tmp_path, tiny_export):
    npy = tmp_path / "no-such-dir" / "v.npy"
    code, out, err = run_cli(capsys, "embed", tiny_export, "x", "--output", npy, "--variant", "fp32")
    assert code == 1
    assert "error:" in err and "no-such-dir" in err


def test_embed_invalid_utf8_names_line(capsys, tmp_path, tiny_export):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff\xfe here\nlast\n")
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 1
    assert out == ""
    assert "line 3" in err
    assert "not valid UTF-8" in err
    assert str(path) in err


def test_embed_encoded_surrogate_in_file_is_invalid_utf8(capsys, tmp_path, tiny_export):
    path = tmp_path / "sur.txt"
    path.write_bytes(b"ok\n\xed\xa0\x80\n")  # UTF-8-style encoding of U+D800: not valid UTF-8
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--variant", "fp32")
    assert code == 1
    assert "line 2" in err and "not valid UTF-8" in err


def test_embed_missing_input_file(capsys, tmp_path, tiny_export):
    missing = tmp_path / "nope.txt"
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", missing, "--variant", "fp32")
    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert "cannot read --input" in err
    assert str(missing) in err
    assert "No such file" in err
    assert "Traceback" not in err


def test_embed_input_is_a_folder(capsys, tmp_path, tiny_export):
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", tmp_path, "--variant", "fp32")
    assert code == 1
    assert "cannot read --input" in err


def test_embed_texts_and_input_together(capsys, tmp_path, tiny_export):
    path = tmp_path / "t.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:  # a usage error: exit 2
        main(["embed", str(tiny_export), "extra text", "--input", str(path), "--variant", "fp32"])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not both" in captured.err


# ------------------------------------------------------------------------------------ embed: bad folders


@pytest.mark.parametrize("missing, variant", [
    ("model.onnx", "fp32"),
    ("tokenizer.json", "fp32"),
    ("model_int8.onnx", "int8"),
    ("model_optimized.onnx", "optimized"),
])
def test_embed_folder_missing_file(capsys, tmp_path, tiny_export, missing, variant):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_export, folder)
    (folder / missing).unlink()
    code, out, err = run_cli(capsys, "embed", folder, "hello", "--variant", variant)
    assert code == 1
    assert out == ""
    assert f"missing file {missing!r}" in err
    assert str(folder) in err


def test_embed_folder_with_corrupt_file(capsys, tmp_path, tiny_export):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_export, folder)
    with open(folder / "tokenizer.json", "ab") as f:
        f.write(b" ")
    code, out, err = run_cli(capsys, "embed", folder, "hello", "--variant", "fp32")
    assert code == 1
    assert "tokenizer.json" in err and "corrupt" in err


def test_embed_non_model_folder(capsys, tmp_path):
    code, out, err = run_cli(capsys, "embed", tmp_path, "hello")
    assert code == 1
    assert "manifest.json" in err


# ------------------------------------------------------------------------------------------------- info


def test_info_matches_manifest(capsys, tiny_export, manifest):
    code, out, err = run_cli(capsys, "info", tiny_export)
    assert code == 0, err
    info = json.loads(out)
    assert info["embedding_dim"] == manifest["embedding_dim"]
    assert info["max_length"] == manifest["max_length"] == 128
    assert set(info["variants"]) == set(manifest["variants"]) == {"fp32", "optimized", "int8"}
    for name, v in info["variants"].items():
        assert v["file"] == manifest["variants"][name]["file"]
        assert v["size_bytes"] == manifest["files"][v["file"]]["size"]
        assert v["size_bytes"] == (tiny_export / v["file"]).stat().st_size
        assert v["parity_passed"] == manifest["variants"][name]["parity"]["passed"]


def test_info_full_is_the_manifest(capsys, tiny_export, manifest):
    code, out, err = run_cli(capsys, "info", tiny_export, "--full")
    assert code == 0, err
    assert json.loads(out) == manifest


def test_info_non_model_folder(capsys, tmp_path):
    code, out, err = run_cli(capsys, "info", tmp_path)
    assert code == 1
    assert out == ""
    assert "manifest.json" in err
    assert str(tmp_path) in err


def test_info_bad_manifest(capsys, tmp_path):
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    code, out, err = run_cli(capsys, "info", tmp_path)
    assert code == 1
    assert "manifest.json" in err and "not readable JSON" in err


def test_info_on_a_file_not_folder(capsys, tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x", encoding="utf-8")
    code, out, err = run_cli(capsys, "info", path)
    assert code == 1
    assert "is not a folder" in err


def test_info_nonexistent_path_is_not_a_repo_id(capsys, tmp_path):
    # An absolute path that does not exist is not a valid Hub repo id: refused without any network access.
    code, out, err = run_cli(capsys, "info", tmp_path / "missing-folder")
    assert code == 1
    assert "no such folder" in err and "not a Hugging Face repo id" in err


# ------------------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize("argv", [
    [],
    ["embed"],
    ["info"],
    ["bogus-command"],
    ["embed", "DIR", "--variant", "bogus"],
    ["embed", "DIR", "--batch-size", "two"],
    ["export"],  # --output is required
    ["embed", "DIR", "--unknown-flag"],
])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["serve", "DIR", "--port", "70000"], "argument --port: must be a whole number from 0 to 65535, got 70000"),
    (["serve", "DIR", "--port", "-1"], "argument --port: must be a whole number from 0 to 65535, got -1"),
    (["serve", "DIR", "--max-queue", "0"], "argument --max-queue: must be a whole number >= 1, got 0"),
    (["serve", "DIR", "--max-batch-tokens", "0"], "argument --max-batch-tokens: must be a whole number >= 1"),
    (["serve", "DIR", "--graceful-timeout-s", "0"], "argument --graceful-timeout-s: must be a whole number >= 1"),
    (["serve", "DIR", "--threads", "0"], "argument --threads: must be a whole number from 1 to "),
    (["serve", "DIR", "--cache-entries", "-1"], "argument --cache-entries: must be a whole number >= 0, got -1"),
    (["embed", "DIR", "x", "--threads", "0"], "argument --threads: must be a whole number from 1 to "),
    (["embed", "DIR", "x", "--threads", str((os.cpu_count() or 1) + 1)], "argument --threads: must be a whole number"),
    (["embed", "DIR", "x", "--batch-size", "-3"], "argument --batch-size: must be a whole number >= 1, got -3"),
    (["embed", "DIR", "x", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, got 0"),
    (["bench", "DIR", "--out", "o", "--repeats", "0"], "argument --repeats: must be a whole number >= 1, got 0"),
    (["bench", "DIR", "--out", "o", "--threads", "0"], "argument --threads: must be a whole number from 1 to "),
    (["export", "-o", "o", "--opset", "9"], "argument --opset: must be a whole number from 14 to 23, got 9"),
    (["export", "-o", "o", "--max-length", "1"], "argument --max-length: must be a whole number >= 2, got 1"),
    (["export", "-o", "o", "--fp32-max-abs", "nan"], "argument --fp32-max-abs: must be a finite number >= 0, got nan"),
    (["export", "-o", "o", "--int8-min-cosine", "1.5"], "argument --int8-min-cosine: must be a number from -1 to 1"),
    (["verify", "DIR", "--threads", "0"], "argument --threads: must be a whole number from 1 to "),
])
def test_out_of_range_flags_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: e5onnx {argv[0]} ") and message in err


@pytest.mark.parametrize("value, message", [
    ("70000", "port must be a whole number from 0 to 65535, got 70000"),
    ("abc", "E5ONNX_PORT='abc' is not a whole number"),
])
def test_serve_bad_environment_value_is_a_usage_error(capsys, monkeypatch, value, message):
    monkeypatch.setenv("E5ONNX_PORT", value)
    with pytest.raises(SystemExit) as info:
        main(["serve", "DIR"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: e5onnx serve ") and message in err


def test_help_reads_defaults_from_config(capsys, monkeypatch):
    from e5onnx import config

    monkeypatch.setattr(config, "SERVER_PORT", 9123)
    monkeypatch.setattr(config, "SERVER_MAX_BODY_BYTES", 3 << 20)
    monkeypatch.setattr(config, "BENCH_REPEATS", 7)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "TCP port (default 9123)" in help_text and "(default 3 MiB; 413 beyond)" in help_text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default 7)" in " ".join(capsys.readouterr().out.split())


def test_version(capsys):
    import e5onnx

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"e5onnx {e5onnx.__version__}"


# ----------------------------------------------------------------------------------------------- export


def test_export_to_existing_folder_without_force(capsys, tiny_export, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_export.iterdir()}
    start = time.perf_counter()
    code, out, err = run_cli(capsys, "export", tmp_path / "no-such-source", "--output", tiny_export)
    elapsed = time.perf_counter() - start
    if "needs the export extra" in err:
        pytest.skip("export extra not installed")
    assert code == 1
    assert out == ""
    assert "already exists" in err
    assert "--force" in err
    assert elapsed < 30  # failed before doing any work (no source lookup, no export)
    assert {p.name: p.stat().st_mtime_ns for p in tiny_export.iterdir()} == before


# ------------------------------------------------------------------------------------------ subprocesses


def test_module_stdin_round_trip(tiny_export, fp32):
    proc = run_program([sys.executable, "-m", "e5onnx.cli", "embed", tiny_export, "--input", "-",
                        "--variant", "fp32"], input="hello world\r\n\ncafé paris\n".encode("utf-8"))
    assert proc.returncode == 0, proc.stderr.decode()
    got = parse_jsonl(proc.stdout.decode("utf-8"), fp32.dim)
    assert got.shape == (3, fp32.dim)
    assert np.max(np.abs(got - fp32.embed(["hello world", "", "café paris"]))) < 1e-6


def test_module_stdin_invalid_utf8_and_no_truncate(tiny_export):
    proc = run_program([sys.executable, "-m", "e5onnx.cli", "embed", tiny_export, "-i", "-", "--variant", "fp32"],
                       input=b"ok\n\xc3\x28\n")
    assert proc.returncode == 1
    err = proc.stderr.decode("utf-8", "replace")
    assert "<stdin> line 2" in err and "not valid UTF-8" in err
    assert "Traceback" not in err
    assert proc.stdout == b""

    proc = run_program([sys.executable, "-m", "e5onnx.cli", "embed", tiny_export, "-i", "-", "--variant", "fp32",
                        "--no-truncate"], input=("short\n" + LONG + "\n").encode())
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "texts[1]: 202 tokens" in err and "max_length 128" in err
    assert proc.stdout == b""


def test_argv_with_invalid_utf8_is_refused(tiny_export):
    # Undecodable argv bytes reach Python as lone surrogates (surrogateescape): refused, naming the index.
    proc = run_program([sys.executable, "-m", "e5onnx.cli", "embed", tiny_export, "fine", b"bad\xff",
                        "--variant", "fp32"])
    assert proc.returncode == 1
    err = proc.stderr.decode("utf-8", "replace")
    assert "texts[1]" in err and "surrogate" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not CONSOLE_SCRIPT.is_file(), reason=f"{CONSOLE_SCRIPT} is not installed")
def test_console_script(tiny_export, fp32, manifest, tmp_path):
    proc = run_program([CONSOLE_SCRIPT, "embed", tiny_export, "hello world", "paris", "--variant", "fp32"])
    assert proc.returncode == 0, proc.stderr.decode()
    got = parse_jsonl(proc.stdout.decode(), fp32.dim)
    assert np.max(np.abs(got - fp32.embed(["hello world", "paris"]))) < 1e-6

    proc = run_program([CONSOLE_SCRIPT, "info", tiny_export])
    assert proc.returncode == 0, proc.stderr.decode()
    info = json.loads(proc.stdout)
    assert info["embedding_dim"] == manifest["embedding_dim"]
    assert set(info["variants"]) == set(manifest["variants"])

    proc = run_program([CONSOLE_SCRIPT, "info", tmp_path])
    assert proc.returncode == 1
    assert b"manifest.json" in proc.stderr

    proc = run_program([CONSOLE_SCRIPT, "embed"])
    assert proc.returncode == 2
    assert b"usage:" in proc.stderr


# ------------------------------------------------------------------------------------ --output safety


@pytest.mark.parametrize("name", ["out.txt", "-", "vectors"])
def test_output_must_be_npy(capsys, tmp_path, tiny_export, name):
    code, out, err = run_cli(capsys, "embed", tiny_export, "x", "--output", tmp_path / name)
    assert code == 1 and "must be a .npy file name" in err
    assert list(tmp_path.iterdir()) == []


def test_output_refuses_a_special_file(capsys, tmp_path, tiny_export):
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    code, out, err = run_cli(capsys, "embed", tiny_export, "x", "--output", fifo)
    assert code == 1 and "is not a regular file" in err
    assert fifo.is_fifo()


def test_output_writes_through_a_symlink(capsys, tmp_path, tiny_export):
    real = tmp_path / "real.npy"
    real.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    code, out, err = run_cli(capsys, "embed", tiny_export, "x", "--output", link, "--variant", "fp32")
    assert code == 0, err
    assert link.is_symlink() and np.load(real).shape == (1, 32)


def test_no_truncate_error_names_the_input_line(capsys, tmp_path, tiny_export):
    path = tmp_path / "in.txt"
    path.write_text("short\n" + "hello " * 300 + "\n")
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", path, "--no-truncate")
    assert code == 1
    assert "texts[1]: 302 tokens, over max_length 128, and truncation is off" in err
    assert f"(line 2 of {path})" in err


def test_jsonl_flag_and_upper_case_suffix(capsys, tmp_path, tiny_export):
    upper = tmp_path / "IN.JSONL"
    upper.write_text('{"text": "hello"}\n"world"\n')
    code, out, err = run_cli(capsys, "embed", tiny_export, "--input", upper, "--variant", "fp32")
    assert code == 0, err
    rows = [json.loads(line)["embedding"] for line in out.splitlines()]
    want = Embedder.load(tiny_export, variant="fp32").embed(["hello", "world"])
    np.testing.assert_allclose(rows, want, atol=1e-6, rtol=0)
    proc = subprocess.run([sys.executable, "-m", "e5onnx.cli", "embed", str(tiny_export), "--input", "-",
                           "--jsonl", "--variant", "fp32"], input='{"text": "hello"}\n', capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(json.loads(proc.stdout)["embedding"], want[0], atol=1e-6, rtol=0)


def test_byte_order_mark_is_not_part_of_the_first_text(capsys, tmp_path, tiny_export):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffquery: hello\nquery: hello\n".encode("utf-8"))
    out_npy = tmp_path / "v.npy"
    code, out, err = run_cli(capsys, "embed", tiny_export, "--query", "--input", path, "-o", out_npy,
                             "--variant", "fp32")
    assert code == 0, err
    v = np.load(out_npy)
    np.testing.assert_allclose(v[0], v[1], atol=1e-6, rtol=0)
