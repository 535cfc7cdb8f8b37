"""The embedders a benchmark compares, behind one interface: ``name``, ``embed(texts) -> (n, dim)``.

- :class:`E5onnxContender`: this project's runtime, one per exported variant.
- :class:`TorchContender`: the model card's PyTorch recipe (transformers, fp32), the reference.
- :class:`FastembedContender`: fastembed pointed at the very same exported ``model.onnx``, with mean
  pooling and normalisation, and its tokenizer set to the same max length (fastembed otherwise keeps the
  truncation stored in ``tokenizer.json``, 128 for all-MiniLM-L6-v2, and its vectors would differ).
- :class:`SentenceTransformersContender`: sentence-transformers' ONNX backend (``backend="onnx"``) on an ONNX
  export of the same source weights made by sentence-transformers itself (:func:`prepare_sentence_transformers`):
  its fp32 ``onnx/model.onnx`` and its own dynamic-int8 export (``export_dynamic_quantized_onnx_model``,
  ``avx512_vnni`` config). What a user would pick instead of e5onnx for INT8 on CPU.

Every contender is built with the same thread count; texts are passed as given (prefixes included).
"""

import numpy as np

from ..config import BENCH_ST_BATCH_SIZE


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


#: sentence-transformers' dynamic-int8 config (``AutoQuantizationConfig.avx512_vnni``, per-channel weights).
ST_INT8_CONFIG = "avx512_vnni"
#: ONNX files of a :func:`prepare_sentence_transformers` folder, per contender name.
ST_FILES = {"st-onnx-fp32": "onnx/model.onnx", "st-onnx-int8": f"onnx/model_qint8_{ST_INT8_CONFIG}.onnx"}


def sentence_transformers_missing():
    """None when sentence-transformers and its ONNX backend (optimum.onnxruntime) import, else why not."""
    try:
        import sentence_transformers  # noqa: F401
        from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model  # noqa: F401
    except Exception as exc:  # ImportError, or a version clash raised at import
        return f"sentence-transformers is not importable ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def _ort_options(threads):
    """onnxruntime session options as e5onnx's own sessions use them
    (:func:`~e5onnx.runtime.session.session_options`), so sentence-transformers runs with the same threads and
    spins and idles the same way."""
    from ..runtime.session import session_options

    return session_options(threads)[0]


def prepare_sentence_transformers(source_dir, folder, threads):
    """Export ``source_dir`` (a Hugging Face / sentence-transformers folder) with sentence-transformers' ONNX
    backend into ``folder``: ``onnx/model.onnx`` (fp32, exported from the torch weights at load) and its
    dynamic-int8 ``onnx/model_qint8_avx512_vnni.onnx``; returns ``folder``.

    A folder without sentence-transformers modules (a plain BERT) gets sentence-transformers' default: mean
    pooling. Needs torch (the export) and no network for a local source (set ``HF_HUB_OFFLINE=1``).

    Raises:
        whatever sentence-transformers / optimum raise when the export fails.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(source_dir), backend="onnx", device="cpu",
                                model_kwargs={"provider": "CPUExecutionProvider"})
    model.save_pretrained(str(folder))
    export_dynamic_quantized_onnx_model(model, ST_INT8_CONFIG, str(folder))
    return folder


class SentenceTransformersContender:
    """sentence-transformers' ``SentenceTransformer(folder, backend="onnx")`` on one ONNX file of a
    :func:`prepare_sentence_transformers` folder; ``encode(..., normalize_embeddings=True)``.

    Threads: ``torch.set_num_threads(threads)`` (its pooling runs in torch) and onnxruntime session options
    with ``threads`` intra-op threads (:func:`_ort_options`). ``max_seq_length`` is set to the folder's max length.
    ``encode`` runs at its default batch size (:data:`BENCH_ST_BATCH_SIZE`), as e5onnx splits a call by its token budget.
    """

    def __init__(self, st_dir, name, threads, max_length):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.name = name
        self.model = SentenceTransformer(str(st_dir), backend="onnx", device="cpu", model_kwargs={
            "file_name": ST_FILES[name], "provider": "CPUExecutionProvider", "session_options": _ort_options(threads)})
        self.model.max_seq_length = max_length

    def embed(self, texts):
        return np.asarray(self.model.encode(list(texts), batch_size=BENCH_ST_BATCH_SIZE, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)


def build(spec):
    """A contender from a JSON-able spec: ``{"kind": "torch"|"fastembed"|"st"|"e5onnx", ...}`` (see :func:`specs`)."""
    kind = spec["kind"]
    if kind == "st":
        return SentenceTransformersContender(spec["st_dir"], spec["name"], spec["threads"], spec["max_length"])
    if kind == "torch":
        return TorchContender(spec["source"], spec["threads"], spec["max_length"])
    if kind == "fastembed":
        return FastembedContender(spec["model_dir"], spec["threads"], spec["max_length"], spec["dim"])
    return E5onnxContender(spec["model_dir"], spec["variant"], spec["threads"])


def specs(model_dir, source, threads, max_length, dim, variants, skip=(), st_dir=None):
    """Specs of every contender of a run: torch (if a source is known), fastembed, sentence-transformers fp32
    and int8 (if ``st_dir``, a :func:`prepare_sentence_transformers` folder, is given), then each variant."""
    common = {"model_dir": str(model_dir), "threads": threads, "max_length": max_length, "dim": dim}
    out = []
    if "torch" not in skip and source:
        out.append({**common, "kind": "torch", "source": str(source)})
    if "fastembed" not in skip:
        out.append({**common, "kind": "fastembed"})
    if "st" not in skip and st_dir:
        out += [{**common, "kind": "st", "st_dir": str(st_dir), "name": name} for name in ST_FILES]
    return out + [{**common, "kind": "e5onnx", "variant": v} for v in variants]
