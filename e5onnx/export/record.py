"""What an export records: the :class:`~e5onnx.runtime.manifest.Manifest` of a finished model folder (files and
their sha256, variants with their parity and gate records, the recipe, the source, the architecture read from the
model, the libraries and CPU of the exporting machine)."""

from datetime import datetime, timezone

from .. import __version__
from ..config import OUTPUT_NAME, PASSAGE_PREFIX, QUERY_PREFIX, VARIANT_FILES
from ..environment import describe
from ..runtime.manifest import Manifest, Source, describe_files
from ..runtime.manifest_parts import variants_of
from . import graph

#: Libraries whose versions the manifest records.
VERSIONED = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "openvino", "tokenizers",
           "huggingface-hub", "numpy")


def environment():
    """Versions of the export's libraries, Python, the platform and the CPU (model and ISA flags)."""
    return {"e5onnx": __version__, **describe(VERSIONED)}


#: What the manifest's ``architecture`` records: config.json's shape fields, then what
#: :func:`~e5onnx.export.support.check_supported` read (``position_limit``, ``pooling_config``, ``tokenizer``).
_ARCHITECTURE_KEYS = ("model_type", "architectures", "num_hidden_layers", "hidden_size", "num_attention_heads",
                      "intermediate_size", "vocab_size", "max_position_embeddings", "type_vocab_size", "position_limit",
                      "pooling_config", "tokenizer")


def export_manifest(folder, source, config, dim, max_length, pad_token_id, variants, tolerances, seconds, ranges=None):
    """The :class:`~e5onnx.runtime.manifest.Manifest` of a finished export folder (every file in it is hashed).

    ``variants``: ``{name: entry}`` as the export built them (``file``, ``parity``, ``quantization``,
    ``optimization``, bf16's backend fields); ``ranges``: the ``embedding_ranges`` record
    (:func:`~e5onnx.export.ranges.embedding_ranges`).
    """
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return Manifest(
        embedding_dim=dim, max_length=max_length, variants=variants_of(variants), files=describe_files(folder, files),
        prefixes={"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX}, pad_token_id=pad_token_id,
        tolerances=tolerances, source=Source(**source),
        record={"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "architecture": {k: config.get(k) for k in _ARCHITECTURE_KEYS}, "pooling": "mean",
                "normalization": "l2", "output": OUTPUT_NAME, "opset": graph.opset_of(folder / VARIANT_FILES["fp32"]),
                "environment": environment(), "export_seconds": round(seconds, 1)},
        embedding_ranges=ranges,
    )
