"""e5onnx: torch-free ONNX Runtime inference for ``intfloat/e5-small`` and an exporter that proves parity.

The runtime half (:mod:`e5onnx.runtime`) needs only numpy, onnxruntime, tokenizers and huggingface-hub.
The export half (:mod:`e5onnx.export`) needs the ``export`` extra (torch, transformers, optimum) and is
never imported by the runtime.
"""

from .errors import (
    BackendUnavailableError,
    E5OnnxError,
    ExportError,
    IntegrityError,
    InvalidInputError,
    ModelFolderError,
    ParityError,
)

#: The one version source: pyproject.toml reads it (``[tool.setuptools.dynamic]``), without importing the package.
__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "E5OnnxError",
    "Embedder",
    "ExportError",
    "IntegrityError",
    "InvalidInputError",
    "ModelFolderError",
    "ParityError",
    "__version__",
]


def __getattr__(name):
    # Lazy, so that `import e5onnx` stays cheap and importing the errors never loads onnxruntime.
    if name == "Embedder":
        from .runtime.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'e5onnx' has no attribute {name!r}")
