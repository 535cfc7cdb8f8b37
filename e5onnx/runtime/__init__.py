"""Torch-free runtime: tokenise (Rust ``tokenizers``) → run the graph (onnxruntime) → pool → normalise (NumPy).

Importing this package, loading a model and embedding never import torch, transformers or optimum.
"""

from .embedder import Embedder
from .pooling import l2_normalize, mean_pool

__all__ = ["Embedder", "l2_normalize", "mean_pool"]
