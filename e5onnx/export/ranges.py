"""The fixed per-dimension ranges of int8 / uint8 output vectors, measured at export and recorded in the manifest.

sentence-transformers' scalar quantisation (``quantize_embeddings``, :mod:`e5onnx.runtime.vectors`) maps each
dimension's ``[min, max]`` onto 256 buckets. Its default takes min and max from the very embeddings being
quantised, so a vector's bytes would depend on its batch-mates; e5onnx fixes them once per model instead, as
sentence-transformers recommends (``calibration_embeddings``): min and max per dimension of the fp32 graph's unit
vectors of the exporter's built-in calibration set (``e5onnx/export/calibration.jsonl``: 240 original queries and
passages of 3-400 words, several languages, with their e5 prefixes). Every variant's int8 / uint8 output uses
these ranges, so the same text gives the same bytes whatever the request, and the bytes of the variants are
comparable.
"""

import hashlib
import json
from importlib import resources

import numpy as np

from ..config import INT8_CALIBRATION_FILE


def builtin_texts():
    """The built-in calibration texts (list of str, in file order)."""
    raw = resources.files("e5onnx.export").joinpath(INT8_CALIBRATION_FILE).read_text(encoding="utf-8")
    return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]


def embedding_ranges(embedder):
    """The manifest's ``embedding_ranges`` record, measured with ``embedder`` (the export's fp32 graph).

    Returns:
        dict: ``min`` and ``max`` (lists of ``dim`` floats, float32 values written exactly), ``texts`` (count),
        ``texts_sha256`` (of the texts joined by newlines), ``source``, ``variant``, ``normalized`` and ``formula``.
    """
    texts = builtin_texts()
    vectors = embedder.embed(texts).astype(np.float32)
    return {
        "min": [float(x) for x in vectors.min(axis=0)], "max": [float(x) for x in vectors.max(axis=0)],
        "texts": len(texts), "texts_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
        "source": f"built-in calibration set (e5onnx/export/{INT8_CALIBRATION_FILE}), texts as given",
        "variant": embedder.variant, "normalized": True,
        "formula": "sentence-transformers quantize_embeddings: step = (max - min) / 255 (1 where 0); "
                   "uint8 = clip(floor((x - min) / step), 0, 255); int8 = uint8 - 128",
    }
