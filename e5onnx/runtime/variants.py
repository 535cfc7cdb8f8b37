"""Which variant of a model folder to run: name checks, the order ``"auto"`` tries, and its file.

The policy behind ``Embedder.load(..., variant="auto")``: the fastest variant whose recorded parity passed and
that suits this CPU (bf16 only with native bf16 and OpenVINO; int8 only when gated on a CPU of the same kind).
"""

from ..config import VARIANT_FILES, VARIANTS
from ..errors import InvalidInputError, ModelFolderError


def check_variant_name(variant):
    """Raise :class:`InvalidInputError` unless ``variant`` is fp32, optimized, int8, bf16 or auto."""
    if variant != "auto" and variant not in VARIANTS:
        raise InvalidInputError(f"variant must be one of {', '.join(VARIANTS)} or 'auto', got {variant!r}")


#: Variants in the order ``"auto"`` tries them: fastest first (measured in benchmarks/results/).
AUTO_ORDER = ("bf16", "int8", "optimized", "fp32")


def auto_candidates(manifest, kind=None):
    """``[(variant, reason)]`` for every variant of the manifest, in :data:`AUTO_ORDER`; ``reason`` is
    ``None`` for a variant ``"auto"`` may use, else why not.

    A variant is usable when its recorded parity passed; int8 also needs its INT8 quality gate passed at
    export on a CPU of the same kind as this one (:func:`~e5onnx.runtime.cpu.cpu_kind`), since INT8 kernels
    and the recipe (reduce_range) differ between CPU kinds; bf16 needs OpenVINO installed and a CPU with
    native bf16 (AMX-BF16 or AVX512-BF16; elsewhere OpenVINO would emulate it slowly).
    """
    from .cpu import cpu_info, cpu_kind
    from .openvino_session import has_native_bf16, openvino_available

    info = cpu_info()  # read /proc/cpuinfo once, for the kind and the bf16 flags
    kind = cpu_kind(info) if kind is None else kind
    out = []
    for name in AUTO_ORDER:
        entry = manifest["variants"].get(name)
        if not isinstance(entry, dict):
            continue
        reason = None
        if (entry.get("parity") or {}).get("passed") is not True:
            reason = "its parity check did not pass"
        elif name == "int8":
            q = entry.get("quantization") or {}
            if (q.get("gate") or {}).get("passed") is not True:
                reason = "it was not built under the INT8 quality gate"
            elif q.get("cpu_kind") != kind:
                reason = f"it was gated on a {q.get('cpu_kind')!r} CPU, this one is {kind!r}"
        elif name == "bf16":
            if not has_native_bf16(info["flags"]):
                reason = "this CPU has no native bf16 (AMX-BF16 / AVX512-BF16)"
            elif not openvino_available():
                reason = "OpenVINO is not installed or does not import (pip install 'e5onnx[openvino]')"
        out.append((name, reason))
    return out


def choose_variant(manifest, variant, kind=None):
    """Resolve ``variant`` against the variants a manifest records.

    ``"auto"`` picks the fastest variant the folder has whose recorded parity passed — bf16 (OpenVINO, on
    CPUs with native bf16), int8 (only when its INT8 quality gate passed on a CPU of this kind), then
    optimized, else fp32 (see :func:`auto_candidates`).

    Args:
        manifest: the folder's manifest.
        variant: ``"fp32"``, ``"optimized"``, ``"int8"`` or ``"auto"``.
        kind: CPU kind to decide for (default: this CPU's).

    Raises:
        InvalidInputError: ``variant`` is not one of fp32, optimized, int8, auto.
        ModelFolderError: the folder has no such variant.
    """
    check_variant_name(variant)
    available = manifest["variants"]
    if variant == "auto":
        usable = [name for name, reason in auto_candidates(manifest, kind) if reason is None]
        variant = usable[0] if usable else "fp32"
    if variant not in available:
        how = {"optimized": "export with --optimize O2", "int8": "export with --quantize int8",
               "bf16": "export with --bf16"}.get(variant, "every export has it: re-export the model")
        raise ModelFolderError(
            f"this model folder has no {variant!r} variant (it has: {', '.join(sorted(available)) or 'none'}); "
            f"{how}"
        )
    return variant


def variant_file(manifest, variant):
    """The ONNX file of ``variant``: the manifest's ``file`` entry, else the default name."""
    return manifest["variants"][variant].get("file", VARIANT_FILES[variant])
