"""The model folder's ``manifest.json`` as a typed record: read and validated, written atomically, and the variant
policy (which variants this machine may run, which one ``"auto"`` picks).

A model folder holds the ONNX variants (``model.onnx``, ``model_optimized.onnx``, ``model_int8.onnx``),
``tokenizer.json`` and ``manifest.json``. The manifest records the sha256 and size of every file, the
pooling/normalisation/prefix recipe and each variant's parity and INT8 gate results. The exporter builds a
:class:`Manifest` and writes it; every reader (runtime, CLI, server, benchmarks) reads one with
:meth:`Manifest.read` — nobody walks the JSON dict. The JSON layout is ``format_version`` 1; a read followed by
:meth:`Manifest.to_dict` gives back the same JSON.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import (
    AUTO_ORDER,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    ParityTolerances,
)
from ..errors import IntegrityError, ModelFolderError
from .atomic import write_json_atomic
from .cache import known_good, remember_good
from .manifest_parts import (  # noqa: F401 - FileRecord, Variant and Source are part of this module's API
    FileRecord,
    Malformed,
    Source,
    Variant,
    files_of,
    prefixes_of,
    ranges_of,
    source_of,
    tolerances_of,
    variants_of,
    whole,
)
from .variants import Host, check_variant_name

_CHUNK = 1 << 20


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder, names):
    """``{name: FileRecord}`` for the given files of ``folder`` (hashed now)."""
    folder = Path(folder)
    return {n: FileRecord(sha256_file(folder / n), (folder / n).stat().st_size) for n in sorted(names)}


_RECORD_KEYS = ("created_at", "architecture", "pooling", "normalization", "output", "opset", "environment",
                "export_seconds")


@dataclass(frozen=True)
class Manifest:
    """A model folder's ``manifest.json``, validated.

    Attributes:
        embedding_dim: width of the vectors (384 for e5-small).
        max_length: most tokens per text the folder was exported and checked for, special tokens included.
        variants: ``{name: Variant}``, at least one.
        files: ``{name: FileRecord}`` of every file in the folder.
        prefixes: ``{"query": ..., "passage": ...}`` added by ``embed_queries`` / ``embed_passages``.
        pad_token_id: the tokenizer's padding id, or None (then ``[PAD]``'s).
        tolerances: the parity tolerances the export was checked with.
        source: where the export came from.
        record: what is recorded for people, not read by code (``created_at``, ``architecture``, ``pooling``,
            ``normalization``, ``output``, ``opset``, ``environment``, ``export_seconds``).
        embedding_ranges: the fixed per-dimension ``min`` / ``max`` (lists of ``embedding_dim`` floats) that int8 /
            uint8 output vectors use, with how they were measured (:mod:`e5onnx.export.ranges`); None in exports
            made before they were recorded.
    """

    embedding_dim: int
    max_length: int
    variants: dict
    files: dict
    prefixes: dict = field(default_factory=lambda: {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX})
    pad_token_id: int = None
    tolerances: ParityTolerances = field(default_factory=ParityTolerances)
    source: Source = field(default_factory=Source)
    record: dict = field(default_factory=dict)
    embedding_ranges: dict = None

    @classmethod
    def read(cls, folder):
        """The validated manifest of ``folder``.

        Raises:
            ModelFolderError: the file is missing, not JSON, not an e5onnx manifest of a known version, or a
                field a reader uses is missing or of the wrong type (the message names it).
        """
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise ModelFolderError(
                f"missing file {MANIFEST_FILE!r} in model folder {str(folder)!r}: not an e5onnx model folder "
                "(create one with `e5onnx export MODEL --output DIR`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFolderError(f"{str(path)!r} is not readable JSON: {exc}") from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data, where="manifest"):
        """A :class:`Manifest` from the JSON object of ``manifest.json``; ``where`` names it in errors.

        Raises:
            ModelFolderError: as :meth:`read`.
        """
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ModelFolderError(f"{where!r} is not an e5onnx manifest (format != {MANIFEST_FORMAT!r})")
        if data.get("format_version") != MANIFEST_VERSION:
            raise ModelFolderError(f"{where!r} has format_version {data.get('format_version')!r}; "
                                   f"this e5onnx reads version {MANIFEST_VERSION}")
        for key in ("files", "variants", "embedding_dim", "max_length"):
            if key not in data:
                raise ModelFolderError(f"{where!r} lacks the required key {key!r}")
        try:
            return cls(
                embedding_dim=whole(data, "embedding_dim", 1), max_length=whole(data, "max_length", 2),
                variants=variants_of(data["variants"]), files=files_of(data["files"], "files"),
                prefixes=prefixes_of(data.get("prefixes", {})),
                pad_token_id=None if data.get("pad_token_id") is None else whole(data, "pad_token_id", 0),
                tolerances=tolerances_of(data.get("tolerances", {})), source=source_of(data.get("source") or {}),
                record={k: data[k] for k in _RECORD_KEYS if k in data},
                embedding_ranges=ranges_of(data.get("embedding_ranges"), data["embedding_dim"]),
            )
        except Malformed as exc:
            raise ModelFolderError(f"{where!r} is malformed: {exc}") from None

    def to_dict(self):
        """The JSON object of ``manifest.json`` (``format_version`` 1)."""
        src = self.source
        out = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, **self.record,
               "source": {"id": src.id, "revision": src.revision, "path": src.path,
                          "weights": {n: vars(r) for n, r in src.weights.items()}},
               "embedding_dim": self.embedding_dim, "max_length": self.max_length, "prefixes": dict(self.prefixes),
               "pad_token_id": self.pad_token_id, "variants": {n: v.to_dict() for n, v in self.variants.items()},
               "tolerances": self.tolerances.as_dict(), "files": {n: vars(r) for n, r in self.files.items()}}
        if self.embedding_ranges is not None:
            out["embedding_ranges"] = self.embedding_ranges
        order = ("format", "format_version", "created_at", "source", "architecture", "embedding_dim", "max_length",
                 "pooling", "normalization", "prefixes", "pad_token_id", "output", "opset", "variants", "tolerances",
                 "embedding_ranges", "environment", "export_seconds", "files")
        return {k: out[k] for k in order if k in out}

    def write(self, folder):
        """Write ``folder/manifest.json`` atomically (temporary file, then ``os.replace``)."""
        write_json_atomic(Path(folder) / MANIFEST_FILE, self.to_dict())

    @property
    def query_prefix(self):
        """What ``embed_queries`` adds (``"query: "`` for e5)."""
        return self.prefixes["query"]

    @property
    def passage_prefix(self):
        """What ``embed_passages`` adds (``"passage: "`` for e5)."""
        return self.prefixes["passage"]

    def variant_file(self, name):
        """The ONNX file of variant ``name``.

        Raises:
            ModelFolderError: the folder has no such variant (the message says how to export it).
        """
        if name not in self.variants:
            how = {"optimized": "export with --optimize O2", "int8": "export with --quantize int8",
                   "bf16": "export with --bf16"}.get(name, "every export has it: re-export the model")
            raise ModelFolderError(f"this model folder has no {name!r} variant (it has: "
                                   f"{', '.join(sorted(self.variants)) or 'none'}); {how}")
        return self.variants[name].file

    def usable_variants(self, host=None):
        """``[(variant, reason)]`` for every variant of the folder, fastest first (:data:`~e5onnx.config.AUTO_ORDER`);
        ``reason`` is None for a variant ``"auto"`` may use on ``host``, else why not.

        A variant is usable when its recorded parity passed; int8 also needs its INT8 quality gate passed at
        export on a CPU of the same kind (:func:`~e5onnx.runtime.cpu.cpu_kind`), since INT8 kernels and the
        recipe (reduce_range) differ between CPU kinds; bf16 needs OpenVINO and a CPU with native bf16
        (AMX-BF16 or AVX512-BF16; elsewhere OpenVINO would emulate it slowly).

        Args:
            host: a :class:`~e5onnx.runtime.variants.Host` (default: this machine, :meth:`Host.this`).
        """
        host = Host.this() if host is None else host
        return [(name, _unusable(self.variants[name], host)) for name in AUTO_ORDER if name in self.variants]

    def choose_variant(self, variant="auto", host=None):
        """Resolve ``variant``: a name the folder has, or for ``"auto"`` the first of :meth:`usable_variants`
        (fp32 when none is).

        Raises:
            InvalidInputError: ``variant`` is not fp32, optimized, int8, bf16 or auto.
            ModelFolderError: the folder has no such variant.
        """
        check_variant_name(variant)
        if variant == "auto":
            usable = [name for name, reason in self.usable_variants(host) if reason is None]
            variant = usable[0] if usable else "fp32"
        self.variant_file(variant)  # raises for a variant the folder lacks
        return variant


def _unusable(entry, host):
    """Why ``"auto"`` may not pick ``entry`` on ``host``, or None."""
    if not entry.parity_passed:
        return "its parity check did not pass"
    if entry.name == "int8":
        if entry.gate.get("passed") is not True:
            return "it was not built under the INT8 quality gate"
        if entry.gated_cpu_kind != host.cpu_kind:
            return f"it was gated on a {entry.gated_cpu_kind!r} CPU, this one is {host.cpu_kind!r}"
    if entry.name == "bf16":
        if not host.native_bf16:
            return "this CPU has no native bf16 (AMX-BF16 / AVX512-BF16)"
        if not host.has_openvino():
            return "OpenVINO is not installed or does not import (pip install 'e5onnx[openvino]')"
    return None


def vectors_identity(embedder):
    """What identifies the vectors of ``embedder`` (an :class:`~e5onnx.runtime.Embedder`), as bytes: sha256 of its
    ONNX file and ``tokenizer.json`` (from its manifest, else hashed now), variant, max length, width and prefixes."""
    files = embedder.manifest.files if embedder.manifest is not None else {}
    parts = {"variant": embedder.variant, "max_length": embedder.max_length, "dim": embedder.dim,
             "prefixes": (embedder.query_prefix, embedder.passage_prefix)}
    for role, path in (("model", embedder.model_path), ("tokenizer", embedder.tokenizer_path)):
        record = files.get(path.name)
        parts[role] = record.sha256 if record is not None else sha256_file(path)
    return repr(sorted(parts.items())).encode()


def check_file(folder, name, manifest, verify_checksum=True):
    """Return ``folder/name`` after checking it exists and matches the manifest's size and sha256.

    A file verified before and unchanged since (same inode, size, mtime and ctime, recorded in the cache
    folder, :mod:`e5onnx.runtime.cache`) is not hashed again.

    Args:
        manifest: the folder's :class:`Manifest`.

    Raises:
        ModelFolderError: the file is missing or not listed in the manifest.
        IntegrityError: its size or sha256 differs from the manifest (corrupt or tampered file).
    """
    folder = Path(folder)
    path = folder / name
    if not path.is_file():
        raise ModelFolderError(f"missing file {name!r} in model folder {str(folder)!r}")
    entry = manifest.files.get(name)
    if entry is None:
        raise ModelFolderError(f"file {name!r} is not listed in {str(folder / MANIFEST_FILE)!r}")
    if verify_checksum:
        size = path.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{name!r} in {str(folder)!r} is {size} bytes but the manifest records {entry.size}: "
                "the file is corrupt or was replaced; re-export or re-download the model"
            )
        if known_good(path, entry.sha256):  # verified before, unchanged since (inode, size, mtime, ctime)
            return path
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise IntegrityError(
                f"{name!r} in {str(folder)!r} has sha256 {digest} but the manifest records "
                f"{entry.sha256}: the file is corrupt or was replaced; re-export or re-download the model"
            )
        remember_good(path, digest)
    return path

