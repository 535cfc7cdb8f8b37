"""The embedders a benchmark compares, behind one interface: ``name``, ``embed(texts) -> (n, dim)``.

- :class:`E5onnxContender`: this project's runtime, one per exported variant.
- :class:`TorchContender`: the model card's PyTorch recipe (transformers, fp32), the reference.
- :class:`FastembedContender`: fastembed pointed at the very same exported ``model.onnx``, with mean
  pooling and normalisation, and its tokenizer set to the same max length (fastembed otherwise keeps the
  truncation stored in ``tokenizer.json``, 128 for all-MiniLM-L6-v2, and its vectors would differ).

Every contender is built with the same thread count; texts are passed as given (prefixes included).
"""

import numpy as np


class E5onnxContender:
    """e5onnx :class:`~e5onnx.runtime.Embedder` on one variant of a model folder."""

    def __init__(self, model_dir, variant, threads, max_length=None):
        from ..runtime.embedder import Embedder

        self.name = f"e5onnx-{variant}"
        self.embedder = Embedder.load(model_dir, variant=variant, threads=threads, max_length=max_length)

    def embed(self, texts):
        return self.embedder.embed(texts, batch_size=max(1, len(texts)))


class TorchContender:
    """The PyTorch reference (model card recipe) on the source Hugging Face folder, ``torch.set_num_threads``."""

    def __init__(self, source_dir, threads, max_length):
        import torch

        from ..export.reference import TorchReference

        torch.set_num_threads(threads)
        self.name = "torch-fp32"
        self.reference = TorchReference(source_dir, max_length)

    def embed(self, texts):
        return self.reference.embed(texts)


class FastembedContender:
    """fastembed's ``TextEmbedding`` on the exported ``model.onnx`` (custom model: mean pooling, normalised)."""

    def __init__(self, model_dir, threads, max_length, dim):
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = "e5onnx/bench-local-model"
        if not any(m["model"] == name for m in TextEmbedding.list_supported_models()):
            TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                           sources=ModelSource(hf=name), dim=dim, model_file="model.onnx")
        self.name = "fastembed-fp32"
        self.model = TextEmbedding(model_name=name, specific_model_path=str(model_dir), threads=threads,
                                   local_files_only=True)
        self.model.model.tokenizer.enable_truncation(max_length)

    def embed(self, texts):
        return np.array(list(self.model.embed(list(texts), batch_size=max(1, len(texts)))), dtype=np.float32)


def build(spec):
    """A contender from a JSON-able spec: ``{"kind": "torch"|"fastembed"|"e5onnx", ...}`` (see :func:`specs`)."""
    kind = spec["kind"]
    if kind == "torch":
        return TorchContender(spec["source"], spec["threads"], spec["max_length"])
    if kind == "fastembed":
        return FastembedContender(spec["model_dir"], spec["threads"], spec["max_length"], spec["dim"])
    return E5onnxContender(spec["model_dir"], spec["variant"], spec["threads"])


def specs(model_dir, source, threads, max_length, dim, variants, skip=()):
    """Specs of every contender of a run: torch (if a source is known), fastembed, then each variant."""
    common = {"model_dir": str(model_dir), "threads": threads, "max_length": max_length, "dim": dim}
    out = []
    if "torch" not in skip and source:
        out.append({**common, "kind": "torch", "source": str(source)})
    if "fastembed" not in skip:
        out.append({**common, "kind": "fastembed"})
    return out + [{**common, "kind": "e5onnx", "variant": v} for v in variants]
