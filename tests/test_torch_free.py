"""The runtime never imports torch, transformers or optimum: checked in a fresh interpreter, for every variant
(bf16 through OpenVINO too), for a local folder and for a Hub repo id read from an offline HF cache; each run also
embeds long texts as windows and gives every compact output form."""

import json
import shutil
import subprocess
import sys

import pytest
from hf_cache import add_to_cache, offline_env

from e5onnx.runtime.openvino_session import openvino_available

SCRIPT = r"""
import json, sys
import e5onnx
from e5onnx.runtime import Embedder
from e5onnx import cli  # the CLI module itself is torch-free too
try:  # the server too, when its extra is installed
    from e5onnx.server import app, main
except ModuleNotFoundError as exc:
    assert exc.name in ("starlette", "uvicorn", "prometheus_client"), exc
e = Embedder.load(sys.argv[1], variant=sys.argv[2], threads=1)
v = e.embed(["query: hello", "passage: world", ""])
e.tokens(["query: hello"]), e.embed_token_ids(e.tokenize(["hello"]))  # the token-level paths too
w = e.embed_passages(["paris " * 400, "x"], truncate="windows")  # long texts as windows
forms = [e.embed(["hello"], output=f).dtype.name for f in ("int8", "uint8", "binary", "ubinary")]
assert w.shape == (2, v.shape[1]) and forms == ["int8", "uint8", "int8", "uint8"], (w.shape, forms)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum"))
print(json.dumps({"shape": list(v.shape), "heavy": heavy, "variant": e.variant,
                  "hub": "huggingface_hub" in sys.modules, "openvino": "openvino" in sys.modules}))
"""


def run_script(model, variant, **kwargs):
    """Run :data:`SCRIPT` on ``model`` in a fresh interpreter; return what it printed (a dict)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(model), variant], check=True, capture_output=True,
                         text=True, timeout=120, **kwargs).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", ["fp32", "optimized", "int8"])
def test_runtime_imports_no_torch(tiny_export, variant):
    result = run_script(tiny_export, variant)
    assert result == {"shape": [3, 32], "heavy": [], "variant": variant, "hub": False, "openvino": False}


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (e5onnx[openvino])")
def test_bf16_imports_no_torch(tiny_export, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_export, folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["variants"]["bf16"] = {"file": "model.onnx", "backend": "openvino", "parity": {"passed": True}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = run_script(folder, "bf16")
    assert result == {"shape": [3, 32], "heavy": [], "variant": "bf16", "hub": False, "openvino": True}


def test_hub_repo_id_imports_no_torch(tiny_export, tmp_path):
    home = tmp_path / "hf-home"
    add_to_cache(home / "hub", "someorg/tiny-e5onnx", tiny_export)
    cwd = tmp_path / "cwd"  # empty: the repo id cannot be mistaken for a local folder
    cwd.mkdir()
    result = run_script("someorg/tiny-e5onnx", "int8", env=offline_env(home), cwd=cwd)
    assert result == {"shape": [3, 32], "heavy": [], "variant": "int8", "hub": True, "openvino": False}


def test_cli_embed_imports_no_torch(tiny_export):
    code = ("import sys, runpy; sys.argv = ['e5onnx', 'embed', sys.argv[1], 'hello'];\n"
            "try:\n    runpy.run_module('e5onnx.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum')], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_export)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.stderr.strip().splitlines()[-1] == "[]"
    assert len(json.loads(proc.stdout)["embedding"]) == 32
