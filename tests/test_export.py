"""Export is atomic: a failure at any step leaves nothing at the output path, and --force replaces safely."""

import json
from pathlib import Path

import pytest

from e5onnx.cli import main
from e5onnx.config import MANIFEST_FILE, SMOOTHQUANT_ALPHA_GRID, ParityTolerances
from e5onnx.errors import ExportError, ParityError
from e5onnx.export import export_model, graph, int8_graph
from e5onnx.runtime.cpu import cpu_kind, int8_saturates


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_parity_failure_leaves_nothing(tmp_path, tiny_bert_dir):
    out = tmp_path / "model"
    with pytest.raises(ParityError) as info:
        export_model(str(tiny_bert_dir), out, max_length=128, tolerances=ParityTolerances(fp32_max_abs=0.0))
    assert "parity check failed for fp32" in str(info.value)
    assert info.value.report["fp32"]["max_abs_diff"] > 0
    assert _leftovers(tmp_path) == []  # neither the output nor a hidden partial folder


def test_failure_mid_way_leaves_nothing(tmp_path, tiny_bert_dir, monkeypatch):
    def boom(src, dst, ranges, **settings):
        Path(dst).write_bytes(b"half a model")
        raise RuntimeError("disk full")

    monkeypatch.setattr(int8_graph, "quantize", boom)
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="disk full"):
        export_model(str(tiny_bert_dir), out, quantize="int8", max_length=128)
    assert _leftovers(tmp_path) == []


def test_interrupt_leaves_nothing(tmp_path, tiny_bert_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(graph, "optimize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(str(tiny_bert_dir), tmp_path / "model", optimize="O2", max_length=128)
    assert _leftovers(tmp_path) == []


def test_force_replaces_and_failed_force_keeps_the_old_folder(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "model"
    assert main(["export", str(tiny_bert_dir), "--output", str(out), "--max-length", "64"]) == 0
    first = json.loads((out / MANIFEST_FILE).read_text())
    assert set(first["variants"]) == {"fp32"} and first["max_length"] == 64

    assert main(["export", str(tiny_bert_dir), "--output", str(out), "--max-length", "64"]) == 1
    assert "already exists" in capsys.readouterr().err

    # a --force export that fails parity must leave the previous folder untouched
    assert main(["export", str(tiny_bert_dir), "--output", str(out), "--force", "--fp32-max-abs", "0"]) == 1
    assert json.loads((out / MANIFEST_FILE).read_text()) == first

    assert main(["export", str(tiny_bert_dir), "-o", str(out), "--force", "--quantize", "int8",
                 "--max-length", "128"]) == 0
    second = json.loads((out / MANIFEST_FILE).read_text())
    assert set(second["variants"]) == {"fp32", "int8"} and second["max_length"] == 128
    assert _leftovers(tmp_path) == ["model"]
    assert (out / "model_int8.onnx").stat().st_mode & 0o777 == (out / MANIFEST_FILE).stat().st_mode & 0o777


def test_manifest_records_what_was_done(tiny_export, tiny_bert_dir):
    m = json.loads((tiny_export / MANIFEST_FILE).read_text())
    assert m["source"]["path"] == str(tiny_bert_dir.resolve()) and m["source"]["revision"] is None
    assert set(m["source"]["weights"]) == {"model.safetensors"}
    assert m["pooling"] == "mean" and m["normalization"] == "l2"
    assert m["prefixes"] == {"query": "query: ", "passage": "passage: "}
    q = m["variants"]["int8"]["quantization"]
    assert q["name"] == "smoothquant-per-token-fused" and q["source_graph"].endswith("(O2)")
    alphas = q["smoothquant_alpha"]  # one α per GEMM input, from the grid
    assert len(alphas) == 2 * 4 and set(alphas.values()) <= set(SMOOTHQUANT_ALPHA_GRID)
    tried = [a["form"] for a in q["gate"]["attempts"]]
    assert tried[0] == ("int8/63" if int8_saturates(cpu_kind()) else "int8/127")  # the fastest form first
    levels = int(tried[-1].split("/")[1])
    assert q["weight_form"] == tried[-1] and q["weight_range"] == [-levels, levels]
    # 2 layers x (fused Attention's packed q/k/v, o, ffn in, ffn out)
    assert len(q["matmuls_quantized"]) == 2 * 4 and q["matmuls_kept_fp32"] == []
    assert q["gate"]["passed"] and q["gate"]["tolerance"]["batch_invariance_min_cosine"] == 0.9999
    assert m["variants"]["optimized"]["optimization"]["level"] == "O2"
    assert m["variants"]["optimized"]["optimization"]["skip_layer_norm_split"] == 2 * 2  # two per layer
    env = m["environment"]
    assert env["versions"]["torch"] and env["versions"]["onnxruntime"] and env["versions"]["optimum"]
    assert "flags" in env["cpu"]
    assert set(m["files"]) >= {"model.onnx", "model_optimized.onnx", "model_int8.onnx", "tokenizer.json"}
    assert MANIFEST_FILE not in m["files"]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_length": 129}, "max_position_embeddings 128"),
    ({"opset": 9}, "--opset"),
    ({"quantize": "int4"}, "--quantize"),
    ({"optimize": "O9"}, "--optimize"),
])
def test_bad_arguments_are_refused_before_work(tmp_path, tiny_bert_dir, kwargs, message):
    with pytest.raises(ExportError, match=message):
        export_model(str(tiny_bert_dir), tmp_path / "model", **kwargs)
    assert _leftovers(tmp_path) == []


def test_source_without_weights(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="no weights"):
        export_model(str(src), tmp_path / "model")
    assert _leftovers(tmp_path) == ["src"]


def test_force_refuses_a_folder_that_is_not_an_export(tmp_path, tiny_bert_dir):
    precious = tmp_path / "mydocs"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(ExportError, match="refusing to replace .* not an e5onnx model folder"):
        export_model(str(tiny_bert_dir), precious, max_length=128, force=True)
    assert (precious / "thesis.txt").read_text() == "years of work"
    empty = tmp_path / "empty"
    empty.mkdir()
    export_model(str(tiny_bert_dir), empty, max_length=128, force=True)  # an empty folder may be replaced
    assert (empty / MANIFEST_FILE).is_file()


@pytest.mark.parametrize("where", ["source", "parent"])
def test_output_may_not_replace_the_source(tmp_path, tiny_bert_dir, where):
    import shutil

    src = tmp_path / "project" / "src"
    shutil.copytree(tiny_bert_dir, src)
    out = src if where == "source" else src.parent
    with pytest.raises(ExportError, match="would replace the source model folder"):
        export_model(str(src), out, max_length=128, force=True)
    assert (src / "model.safetensors").is_file()


def test_missing_parent_folders_are_created(tmp_path, tiny_bert_dir):
    out = tmp_path / "models" / "deep" / "tiny"
    export_model(str(tiny_bert_dir), out, max_length=128)
    assert (out / MANIFEST_FILE).is_file()


def test_revision_with_a_local_source_is_refused(tmp_path, tiny_bert_dir):
    with pytest.raises(ExportError, match="--revision applies to Hub ids"):
        export_model(str(tiny_bert_dir), tmp_path / "m", revision="main")


def test_nan_tolerance_is_refused(tmp_path, tiny_bert_dir, capsys):
    with pytest.raises(SystemExit) as info:  # a usage error, found while parsing
        main(["export", str(tiny_bert_dir), "-o", str(tmp_path / "m"), "--fp32-max-abs", "nan"])
    assert info.value.code == 2
    assert "argument --fp32-max-abs: must be a finite number >= 0, got nan" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("sig, code", [("TERM", 143), ("INT", 130)])
def test_signal_during_export_leaves_nothing(tmp_path, tiny_bert_dir, sig, code):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "model"
    proc = subprocess.Popen([sys.executable, "-m", "e5onnx.cli", "export", str(tiny_bert_dir), "-o", str(out),
                             "--max-length", "128", "--quantize", "int8", "--optimize", "O2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".model.partial-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before it could be signalled"
        time.sleep(0.02)
    proc.send_signal(getattr(signal, "SIG" + sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert _leftovers(tmp_path) == []


def _fake_export(folder, tag):
    folder.mkdir()
    (folder / MANIFEST_FILE).write_text(json.dumps({"tag": tag}))
    (folder / "model.onnx").write_text(tag)


@pytest.mark.parametrize("sig, code", [("TERM", 143), ("INT", 130)])
@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_signal_while_replacing_an_export_leaves_the_new_one(tmp_path, monkeypatch, capsys, swap, sig, code):
    """Issue 10 fault (h): a signal between the two renames (old export moved aside, new one not yet in) used to
    leave the old export in a hidden folder and nothing at the output."""
    import os
    import signal

    from e5onnx.export import exporter
    from e5onnx.runtime import atomic

    out, new = tmp_path / "out", tmp_path / ".out.partial-1"
    _fake_export(out, "old")
    _fake_export(new, "new")
    signum = getattr(signal, "SIG" + sig)
    if swap == "exchange":
        probe = tmp_path / "probe"
        probe.mkdir()
        if not atomic.exchange(probe, new):  # swaps them, then back
            pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
        atomic.exchange(probe, new)
        probe.rmdir()
        exchange = atomic.exchange

        def signalled_exchange(a, b):
            os.kill(os.getpid(), signum)  # arrives just before the swap
            return exchange(a, b)

        monkeypatch.setattr(atomic, "exchange", signalled_exchange)
    else:
        rename = os.rename

        def signalled_rename(src, dst):  # the first rename (old export moved aside), then the signal
            monkeypatch.setattr(os, "rename", rename)
            rename(src, dst)
            os.kill(os.getpid(), signum)

        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
        monkeypatch.setattr(os, "rename", signalled_rename)
    with pytest.raises(SystemExit) as info, exporter._signals_as_exit():
        exporter._place(new, out, force=True)
    assert info.value.code == code  # handled as a signalled export: exit 143 / 130, once the swap is done
    assert "interrupted" in capsys.readouterr().err
    assert json.loads((out / MANIFEST_FILE).read_text()) == {"tag": "new"}
    assert (out / "model.onnx").read_text() == "new"
    assert _leftovers(tmp_path) == ["out"]  # no hidden folder left: neither the old export nor the new one


def test_verify_after_the_source_moved(tmp_path, tiny_bert_dir, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_bert_dir, src)
    out = tmp_path / "out"
    export_model(str(src), out, max_length=128)
    src.rename(tmp_path / "moved")
    assert main(["verify", str(out)]) == 1
    assert "no longer exists; pass --source" in capsys.readouterr().err
    assert main(["verify", str(out), "--source", str(tmp_path / "moved")]) == 0


def test_output_inside_the_source_is_refused(tmp_path, tiny_bert_dir):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_bert_dir, src)
    with pytest.raises(ExportError, match="is inside the source model folder"):
        export_model(str(src), src / "onnx", max_length=128)
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in tiny_bert_dir.iterdir())


def test_an_output_that_appears_during_export_is_not_replaced(tmp_path):
    from e5onnx.export.exporter import _place

    tmp, out = tmp_path / "new", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    (out / "theirs").write_text("x")
    with pytest.raises(ExportError, match="appeared while exporting"):
        _place(tmp, out, force=False)
    assert (out / "theirs").is_file()


def test_max_length_defaults_to_sentence_transformers_setting(tmp_path, tiny_bert_dir):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_bert_dir, src)
    (src / "sentence_bert_config.json").write_text('{"max_seq_length": 64, "do_lower_case": false}')
    m = export_model(str(src), tmp_path / "out")
    assert m.max_length == 64


def test_verify_needs_a_local_export(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing")]) == 1
    assert "no such model folder" in capsys.readouterr().err
