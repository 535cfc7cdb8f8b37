"""Compact output vectors: float32 embeddings as int8, uint8, binary or ubinary, with sentence-transformers' formulas.

The forms and formulas are those of sentence-transformers' ``quantize_embeddings`` (``sentence_transformers.util.
quantization``, v5; the embedding-quantization blog post, Hugging Face, 2024-03-22), so a vector database fed by
either gets the same bytes (``tests/test_vectors.py`` compares with it):

- ``int8`` / ``uint8`` (scalar): per dimension ``d``, ``step = (max_d - min_d) / 255`` (1 where max = min),
  ``q = clip(floor((x - min_d) / step), 0, 255)``; uint8 is ``q``, int8 is ``q - 128``. The ranges are FIXED: the
  per-dimension min and max of the fp32 model's unit vectors of the exporter's built-in calibration texts,
  recorded in the manifest (``embedding_ranges``, :mod:`e5onnx.export.ranges`). A text's bytes therefore do not
  depend on the other texts of a request (sentence-transformers' default, ranges from the batch itself, does). A
  value outside its range is clipped to 0 or 255. Arithmetic is float32, as sentence-transformers' on float32
  vectors and float32 ranges.
- ``ubinary``: ``numpy.packbits(x > 0)``: 8 dimensions per byte, the first dimension in the most significant bit;
  ``binary`` is the same bits as int8, ``byte - 128``. ``ceil(dim / 8)`` bytes (48 for 384 dims).

Hamming distance is the same on binary and ubinary bytes (the offset flips the top bit of both).
"""

import math

import numpy as np

from ..errors import InvalidInputError, ModelFolderError
from .arguments import output_form

#: NumPy dtype of each output form.
DTYPES = {"float": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}
#: Forms that need the model folder's calibrated ranges.
SCALAR = ("int8", "uint8")


def vector_bytes(dim, output):
    """Bytes of one vector of ``dim`` dimensions in form ``output`` (float: 4 x dim; int8/uint8: dim; binary:
    ceil(dim / 8))."""
    return {"float": 4 * dim, "int8": dim, "uint8": dim}.get(output, -(-dim // 8))


def ranges_array(record, dim):
    """The ``(2, dim)`` float32 ranges (row 0 min, row 1 max) of a manifest's ``embedding_ranges`` record, or None."""
    if record is None:
        return None
    out = np.array([record["min"], record["max"]], dtype=np.float32)
    return out if out.shape == (2, dim) else None


def ranges_problem(record, dim):
    """What is wrong with a manifest's ``embedding_ranges`` record for ``dim`` dimensions, or None (also for no record).

    A record is an object with ``min`` and ``max``: lists of ``dim`` finite numbers, ``min <= max`` per dimension.
    """
    if record is None:
        return None
    if not isinstance(record, dict):
        return "embedding_ranges must be an object"
    for key in ("min", "max"):
        values = record.get(key)
        if not (isinstance(values, list) and len(values) == dim and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            return f"embedding_ranges['{key}'] must be a list of {dim} finite numbers (embedding_dim)"
    bad = next((i for i, (a, b) in enumerate(zip(record["min"], record["max"])) if a > b), None)
    return None if bad is None else f"embedding_ranges: min > max at dimension {bad}"


def missing_ranges(where):
    """The error for int8/uint8 on a model folder without ``embedding_ranges``; ``where`` names the folder."""
    return ModelFolderError(
        f"int8 and uint8 vectors need the per-dimension ranges an export records in manifest.json "
        f"('embedding_ranges'), and {where} has none (exported by an older e5onnx, or loaded without a manifest): "
        "re-export the model with `e5onnx export SOURCE --output DIR` to get them; float, binary and ubinary "
        "need none")


def usable_form(output, ranges, where):
    """``output`` if it is a form (:data:`~e5onnx.config.OUTPUT_FORMS`) that ``ranges`` allow; ``where`` names the
    model in the error.

    Raises:
        InvalidInputError: an unknown ``output``. ModelFolderError: int8 / uint8 and ``ranges`` is None.
    """
    output = output_form(output)
    if output in SCALAR and ranges is None:
        raise missing_ranges(where)
    return output


def checked_vectors(vectors, dim=None):
    """``vectors`` as a ``(n, dim)`` float32 array, every value finite.

    Raises:
        InvalidInputError: not a 2-D array of numbers, not ``dim`` wide (when given), or a NaN / infinite value
            (the first such row is named).
    """
    try:
        vectors = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"vectors must be an (n, dim) array of numbers: {exc}") from None
    if vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim)"
        raise InvalidInputError(f"vectors must be {want}, got shape {vectors.shape}")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise InvalidInputError(f"vectors[{bad[0]}] holds a NaN or infinite value", index=int(bad[0]))
    return vectors


def quantize(vectors, output, ranges=None, dim=None):
    """``vectors`` in form ``output``.

    Args:
        vectors: ``(n, dim)`` float32 (unit vectors for int8/uint8: the ranges were calibrated on them).
        output: ``"float"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"``.
        ranges: ``(2, dim)`` float32 per-dimension min and max (int8 / uint8 only).
        dim: the width ``vectors`` must have (default: the width of ``ranges``, else any).

    Returns:
        ``(n, dim)`` float32 (float, unchanged), ``(n, dim)`` int8 / uint8, or ``(n, ceil(dim / 8))`` int8
        (binary) / uint8 (ubinary).

    Raises:
        InvalidInputError: an unknown ``output``; ``vectors`` not a 2-D array of numbers, of another width than
            ``dim`` (or ``ranges``), or with a NaN / infinite value (the first such row is named: its bytes would be noise).
        ModelFolderError: int8 / uint8 without ``ranges`` (:func:`missing_ranges`).
    """
    output = usable_form(output, ranges, "this model")
    vectors = checked_vectors(vectors, dim if dim is not None or ranges is None else np.shape(ranges)[-1])
    if output == "float":
        return vectors
    if output in SCALAR:
        starts = ranges[0, :]
        steps = (ranges[1, :] - ranges[0, :]) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((vectors - starts) / steps), 0, 255)
        return q.astype(np.uint8) if output == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(vectors > 0, axis=-1)  # (n, ceil(dim / 8)), (0, ceil(dim / 8)) for no vectors
    return packed if output == "ubinary" else (packed ^ np.uint8(0x80)).view(np.int8)


class VectorForms:
    """The Embedder's output-form methods (a base class of :class:`~e5onnx.runtime.Embedder`); needs its ``dim``,
    ``embedding_ranges``, ``manifest`` and ``model_path``."""

    def quantize(self, vectors, output):
        """``(n, dim)`` float32 unit vectors of this model in form ``output`` (:func:`e5onnx.runtime.vectors.quantize`
        with :attr:`embedding_ranges`); returns as :meth:`embed`, raises as :meth:`check_output` and
        InvalidInputError for vectors that are not ``(n, dim)`` of this model or hold a NaN / infinity."""
        return quantize(vectors, self.check_output(output), self.embedding_ranges, self.dim)

    def check_output(self, output):
        """``output`` if it is a form this model can give: int8 / uint8 need :attr:`embedding_ranges`.

        Raises:
            InvalidInputError: an unknown ``output``. ModelFolderError: int8 / uint8 without ranges (re-export).
        """
        where = f"the model folder {str(self.model_path.parent)!r}" if self.manifest else "this Embedder"
        return usable_form(output, self.embedding_ranges, where)
