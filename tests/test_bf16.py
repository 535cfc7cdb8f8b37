"""The optional OpenVINO backend: the bf16 variant runs the very same model.onnx, is parity-checked at export,
and ``variant="auto"`` uses it only on CPUs with native bf16 and only with OpenVINO installed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from e5onnx.config import MANIFEST_FILE
from e5onnx.errors import BackendUnavailableError, ExportError, ModelFolderError
from e5onnx.export import export_model
from e5onnx.runtime import Embedder, cpu
from e5onnx.runtime.manifest import Manifest
from e5onnx.runtime.openvino_session import (
    OpenVinoEncoder,
    has_native_bf16,
    model_cache_dir,
    openvino_available,
)
from e5onnx.runtime.variants import Host

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (e5onnx[openvino])")
TEXTS = ["query: how long do cats sleep", "passage: Cats sleep 12 to 16 hours a day. " * 5, "", "東京"]


@pytest.fixture(scope="module")
def bf16_export(tmp_path_factory, tiny_bert_dir):
    if not openvino_available():
        pytest.skip("OpenVINO is not installed (e5onnx[openvino])")
    out = tmp_path_factory.mktemp("bf16") / "m"
    export_model(str(tiny_bert_dir), out, quantize="int8", max_length=128, bf16=True)
    return out


@needs_openvino
def test_bf16_variant_is_recorded_and_close_to_fp32(bf16_export):
    manifest = json.loads((bf16_export / MANIFEST_FILE).read_text())
    entry = manifest["variants"]["bf16"]
    assert entry["file"] == "model.onnx" and entry["backend"] == "openvino" and entry["parity"]["passed"]
    assert entry["precision_effective"] == ("bf16" if has_native_bf16(cpu.cpu_info()["flags"]) else "f32")
    assert "model_bf16.onnx" not in manifest["files"]  # no extra file: the fp32 graph is reused
    bf16 = Embedder.load(bf16_export, variant="bf16", threads=1)
    fp32 = Embedder.load(bf16_export, variant="fp32", threads=1)
    assert bf16.variant == "bf16" and bf16.model_path == fp32.model_path
    got, want = bf16.embed(TEXTS), fp32.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.sum(got * want, axis=1).min() >= 0.999


@needs_openvino
def test_auto_uses_bf16_only_where_the_cpu_has_it(bf16_export, monkeypatch):
    manifest = Manifest.read(bf16_export)
    kind = cpu.cpu_kind()  # the kind the export's int8 was gated on (this CPU)
    monkeypatch.setattr(cpu, "cpu_info", lambda: {"machine": "x86_64", "flags": ["avx2", "avx512_bf16"]})
    assert manifest.choose_variant("auto", Host.this(kind)) == "bf16"
    monkeypatch.setattr(cpu, "cpu_info", lambda: {"machine": "x86_64", "flags": ["avx2"]})
    reasons = dict(manifest.usable_variants(Host.this(kind)))
    assert reasons["bf16"] == "this CPU has no native bf16 (AMX-BF16 / AVX512-BF16)"
    assert manifest.choose_variant("auto", Host.this(kind)) == "int8"  # the next in line


def test_without_openvino_bf16_is_a_clear_error(tiny_export, monkeypatch, tmp_path, tiny_bert_dir):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'e5onnx\[openvino\]'"):
        Embedder(tiny_export / "model.onnx", tiny_export / "tokenizer.json", max_length=128, variant="bf16")
    monkeypatch.setattr("e5onnx.export.exporter.openvino_available", lambda: False)
    with pytest.raises(ExportError, match="--bf16 .* needs OpenVINO"):
        export_model(str(tiny_bert_dir), tmp_path / "m", max_length=128, bf16=True)
    assert list(tmp_path.iterdir()) == []


def test_broken_openvino_install_makes_auto_fall_back(tiny_export, tmp_path, monkeypatch):
    fake = tmp_path / "fake" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("libopenvino.so: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    assert not openvino_available()
    data = json.loads((tiny_export / MANIFEST_FILE).read_text())
    data["variants"]["bf16"] = {"file": "model.onnx", "backend": "openvino", "parity": {"passed": True}}
    manifest = Manifest.from_dict(data)
    kind = manifest.variants["int8"].gated_cpu_kind  # the CPU the tiny export was gated on
    monkeypatch.setattr(cpu, "cpu_info", lambda: {"machine": "x86_64", "flags": ["avx512_bf16"]})
    host = Host.this(kind)
    assert "not installed" in dict(manifest.usable_variants(host))["bf16"]
    assert manifest.choose_variant("auto", host) == "int8"
    with pytest.raises(BackendUnavailableError, match="libopenvino.so"):
        Embedder(tiny_export / "model.onnx", tiny_export / "tokenizer.json", max_length=128, variant="bf16")


def test_hand_edited_int8_entries_are_refused_or_not_chosen(tiny_export):
    data = json.loads((tiny_export / MANIFEST_FILE).read_text())
    data["variants"]["int8"]["quantization"] = None  # no record of the gate: auto does not pick int8
    manifest = Manifest.from_dict(data)
    assert manifest.choose_variant("auto") == "optimized"
    assert dict(manifest.usable_variants())["int8"] == "it was not built under the INT8 quality gate"
    for broken in ({"gate": None}, {"gate": {"passed": "false"}}):
        data["variants"]["int8"]["quantization"] = broken
        with pytest.raises(ModelFolderError, match=r"variants\['int8'\]\['quantization'\]\['gate'\] must be an object "
                                                  "whose 'passed' is true or false"):
            Manifest.from_dict(data, "m.json")


def test_model_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("E5ONNX_CACHE_DIR", str(tmp_path / "c"))
    assert model_cache_dir() == tmp_path / "c" / "openvino" and (tmp_path / "c" / "openvino").is_dir()
    monkeypatch.setenv("E5ONNX_CACHE_DIR", "")
    assert model_cache_dir() is None  # empty: caching off
    monkeypatch.delenv("E5ONNX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "e5onnx" / "openvino"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("E5ONNX_CACHE_DIR", str(blocker))
    assert model_cache_dir() is None  # cannot be created: caching off, the load still works


@needs_openvino
def test_compiled_model_is_cached_and_reused(bf16_export, monkeypatch, tmp_path):
    monkeypatch.setenv("E5ONNX_CACHE_DIR", str(tmp_path))
    first = OpenVinoEncoder(bf16_export / "model.onnx", threads=1)
    assert first.cache_dir == tmp_path / "openvino"
    entries = sorted(p.name for p in first.cache_dir.iterdir())
    assert any(name.endswith(".blob") for name in entries), entries
    ids = np.array([[2, 40, 41, 3]], np.int64)
    again = OpenVinoEncoder(bf16_export / "model.onnx", threads=1)  # a cache hit: same entries, same output
    assert sorted(p.name for p in again.cache_dir.iterdir()) == entries
    assert np.array_equal(first.run(ids, np.ones_like(ids)), again.run(ids, np.ones_like(ids)))
    monkeypatch.setenv("E5ONNX_CACHE_DIR", "")
    assert OpenVinoEncoder(bf16_export / "model.onnx", threads=1).cache_dir is None


_SIGNAL_AFTER_RELEASE = """
import gc, os, signal, sys
from e5onnx.runtime.openvino_session import OpenVinoEncoder
first, second = (OpenVinoEncoder(sys.argv[1], threads=1) for _ in range(2))
del first, second  # released in the order they were made (as an export's parity check does)
gc.collect()
caught = []
signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
os.kill(os.getpid(), signal.SIGTERM)
print(caught)
"""


@needs_openvino
def test_a_signal_after_releasing_encoders_is_handled(bf16_export, tmp_path):
    # Two OpenVINO Cores released in creation order left the thread on a freed alternate signal stack: the next
    # signal with a Python handler was a SIGSEGV (exit -11). With one Core per process it is handled.
    env = {**os.environ, "E5ONNX_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_RELEASE, str(bf16_export / "model.onnx")],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[15]"), proc.stderr[-2000:]
