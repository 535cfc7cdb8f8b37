"""The parts of ``manifest.json``: the typed records a :class:`~e5onnx.runtime.manifest.Manifest` holds (one file's
sha256 and size, one variant, the export's source) and the checks that build them from the JSON, each failure a
:class:`Malformed` naming the field and why (:meth:`~e5onnx.runtime.manifest.Manifest.from_dict` turns it into a
:class:`~e5onnx.errors.ModelFolderError` naming the file)."""

from dataclasses import dataclass, field
from pathlib import Path

from ..config import PASSAGE_PREFIX, QUERY_PREFIX, VARIANT_FILES, ParityTolerances
from ..errors import InvalidInputError
from .vectors import ranges_problem


@dataclass(frozen=True)
class FileRecord:
    """sha256 (hex) and size (bytes) of one file of the folder."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Variant:
    """One ONNX variant of the folder.

    Attributes:
        name: ``"fp32"``, ``"optimized"``, ``"int8"`` or ``"bf16"``.
        file: its ONNX file inside the folder (bf16 reuses ``model.onnx``).
        parity: the export's parity record (:func:`~e5onnx.export.parity.run_parity`: ``passed``,
            ``max_abs_diff``, ``min_cosine``, ``mean_cosine``, ``failures``, ...).
        quantization: int8 only: the recipe and the INT8 quality gate (:func:`~e5onnx.export.int8_gate.build_int8`),
            else None.
        optimization: optimized only: onnxruntime's fusion settings and counts, else None.
        extra: any other entries (bf16: ``backend``, ``precision``, ``precision_effective``, ``cpu_kind``).
    """

    name: str
    file: str
    parity: dict = field(default_factory=dict)
    quantization: dict = None
    optimization: dict = None
    extra: dict = field(default_factory=dict)

    @property
    def parity_passed(self):
        """True only when the recorded parity check passed."""
        return self.parity.get("passed") is True

    @property
    def gate(self):
        """The INT8 quality gate's record (``passed``, figures, tolerances, attempts), or ``{}``."""
        return (self.quantization or {}).get("gate") or {}

    @property
    def gated_cpu_kind(self):
        """The CPU kind the INT8 gate was passed on (:func:`~e5onnx.runtime.cpu.cpu_kind`), or None."""
        return (self.quantization or {}).get("cpu_kind")

    def to_dict(self):
        """The JSON entry of ``variants[name]``."""
        out = {"file": self.file}
        for key in ("optimization", "quantization"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        if self.parity:
            out["parity"] = self.parity
        return out


@dataclass(frozen=True)
class Source:
    """Where the export came from: a Hub ``id`` and resolved ``revision``, or a local ``path`` (then ``id`` is the
    path as given), and ``weights`` (``{file: FileRecord}``) of the source model."""

    id: str = None
    revision: str = None
    path: str = None
    weights: dict = field(default_factory=dict)

    @property
    def hub_id(self):
        """The Hub repo id when the export came from the Hub, else None (a local folder)."""
        return self.id if self.id and not self.path else None


class Malformed(Exception):
    """A manifest field of the wrong shape (message: which and why)."""


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def whole(data, key, minimum):
    """``data[key]`` if it is an int (not a bool) >= ``minimum``; raises :class:`Malformed`."""
    if not _is_int(data[key], minimum):
        raise Malformed(f"{key} must be a whole number >= {minimum}, got {data[key]!r}")
    return data[key]


def files_of(files, where):
    """``{name: FileRecord}`` from the JSON ``files`` object (``where`` names it in errors); raises :class:`Malformed`."""
    if not isinstance(files, dict):
        raise Malformed(f"{where} must be an object, got {type(files).__name__}")
    out = {}
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _is_int(entry.get("size"), 0)):
            raise Malformed(f"{where}[{name!r}] must have a sha256 string and a size in bytes")
        out[name] = FileRecord(entry["sha256"], entry["size"])
    return out


def variants_of(variants):
    """``{name: Variant}`` from the JSON ``variants`` object (known names, a file inside the folder, object-shaped
    parity / quantization / optimization); raises :class:`Malformed`."""
    if not isinstance(variants, dict) or not variants:
        raise Malformed("variants must be a non-empty object")
    out = {}
    for name, entry in variants.items():
        where = f"variants[{name!r}]"
        if name not in VARIANT_FILES:
            raise Malformed(f"{where}: unknown variant (known: {', '.join(VARIANT_FILES)})")
        if not isinstance(entry, dict) or not isinstance(entry.get("file", ""), str):
            raise Malformed(f"{where} must be an object with a 'file' name")
        file = entry.get("file", VARIANT_FILES[name])
        if Path(file).name != file or not file:
            raise Malformed(f"{where}['file'] must be a file name inside the folder, got {file!r}")
        parts = {k: entry.get(k) for k in ("parity", "quantization", "optimization")}
        for key, value in parts.items():
            if value is not None and not isinstance(value, dict):
                raise Malformed(f"{where}[{key!r}] must be an object")
        if not isinstance((parts["parity"] or {}).get("passed", False), bool):
            raise Malformed(f"{where}['parity']['passed'] must be true or false")
        _check_quantization(where, parts["quantization"])
        extra = {k: v for k, v in entry.items() if k not in ("file", *parts)}
        out[name] = Variant(name, file, parts["parity"] or {}, parts["quantization"], parts["optimization"], extra)
    return out


def _check_quantization(where, q):
    if q is None:
        return
    gate = q.get("gate", {})
    if not isinstance(gate, dict) or not isinstance(gate.get("passed", False), bool):
        raise Malformed(f"{where}['quantization']['gate'] must be an object whose 'passed' is true or false")
    if q.get("cpu_kind") is not None and not isinstance(q["cpu_kind"], str):
        raise Malformed(f"{where}['quantization']['cpu_kind'] must be a string")


def prefixes_of(prefixes):
    """``{"query": str, "passage": str}`` (e5's defaults for missing keys); raises :class:`Malformed`."""
    if not isinstance(prefixes, dict) or not all(isinstance(prefixes.get(k, ""), str) for k in ("query", "passage")):
        raise Malformed("prefixes must be an object with 'query' and 'passage' strings")
    return {"query": prefixes.get("query", QUERY_PREFIX), "passage": prefixes.get("passage", PASSAGE_PREFIX)}


def ranges_of(ranges, dim):
    """``embedding_ranges`` (None, or per-dimension ``min`` / ``max`` lists of ``dim`` finite numbers,
    :func:`~e5onnx.runtime.vectors.ranges_problem`); raises :class:`Malformed`."""
    problem = ranges_problem(ranges, dim)
    if problem:
        raise Malformed(problem)
    return ranges


def tolerances_of(tolerances):
    """:class:`~e5onnx.config.ParityTolerances` from the JSON object; raises :class:`Malformed`."""
    known = set(ParityTolerances.__dataclass_fields__)
    if not isinstance(tolerances, dict) or not set(tolerances) <= known:
        raise Malformed(f"tolerances must be an object with keys among {sorted(known)}")
    try:
        return ParityTolerances(**tolerances)
    except InvalidInputError as exc:
        raise Malformed(str(exc)) from None


def source_of(source):
    """:class:`Source` from the JSON ``source`` object; raises :class:`Malformed`."""
    if not isinstance(source, dict):
        raise Malformed("source must be an object")
    for key in ("id", "revision", "path"):
        if source.get(key) is not None and not isinstance(source[key], str):
            raise Malformed(f"source[{key!r}] must be a string or null")
    return Source(source.get("id"), source.get("revision"), source.get("path"),
                  files_of(source.get("weights") or {}, "source['weights']"))
