"""The runtime never imports torch, transformers or optimum: checked in a fresh interpreter."""

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
import e5onnx
from e5onnx.runtime import Embedder
from e5onnx import cli  # the CLI module itself is torch-free too
try:  # the server too, when its extra is installed
    from e5onnx.server import app, main
except ModuleNotFoundError as exc:
    assert exc.name in ("starlette", "uvicorn", "prometheus_client"), exc
e = Embedder.load(sys.argv[1], variant=sys.argv[2])
v = e.embed(["query: hello", "passage: world", ""])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum"))
print(json.dumps({"shape": list(v.shape), "heavy": heavy}))
"""


def test_runtime_imports_no_torch(tiny_export):
    for variant in ("fp32", "optimized", "int8"):
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_export), variant], check=True,
                             capture_output=True, text=True, timeout=120).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert result["heavy"] == []
        assert result["shape"] == [3, 32]


def test_cli_embed_imports_no_torch(tiny_export):
    code = ("import sys, runpy; sys.argv = ['e5onnx', 'embed', sys.argv[1], 'hello'];\n"
            "try:\n    runpy.run_module('e5onnx.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum')], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_export)], capture_output=True, text=True,
                          timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "[]"
    assert len(json.loads(proc.stdout)["embedding"]) == 32
