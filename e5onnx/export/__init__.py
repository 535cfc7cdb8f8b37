"""Export (needs the ``export`` extra: torch, transformers, optimum): Hugging Face model → verified ONNX folder.

This half may import :mod:`e5onnx.runtime`; the runtime never imports this half.
"""

from .exporter import export_model
from .parity import run_parity, verify_folder
from .reference import TorchReference

__all__ = ["TorchReference", "export_model", "run_parity", "verify_folder"]
