"""What the variant policy needs to know about this machine (:class:`Host`), and the check of a variant name.

The policy itself — which variants a folder's manifest lets ``"auto"`` use here, and which it picks — is
:meth:`~e5onnx.runtime.manifest.Manifest.usable_variants` / :meth:`~e5onnx.runtime.manifest.Manifest.choose_variant`.
"""

from dataclasses import dataclass

from ..config import VARIANTS
from ..errors import InvalidInputError


def check_variant_name(variant):
    """Raise :class:`InvalidInputError` unless ``variant`` is fp32, optimized, int8, bf16 or auto."""
    if variant != "auto" and variant not in VARIANTS:
        raise InvalidInputError(f"variant must be one of {', '.join(VARIANTS)} or 'auto', got {variant!r}")


@dataclass(frozen=True)
class Host:
    """The machine a variant is chosen for.

    Attributes:
        cpu_kind: :func:`~e5onnx.runtime.cpu.cpu_kind` (``"avx512_vnni"``, ``"avx2"``, ``"arm64"``, ...): an int8
            variant is used only on the kind its INT8 gate was passed on.
        native_bf16: the CPU has AMX-BF16 or AVX512-BF16 (:func:`~e5onnx.runtime.openvino_session.has_native_bf16`).
        openvino: the ``openvino`` package imports; None: not looked at yet (importing it costs time, so
            :meth:`has_openvino` tries only when a bf16 variant is in question).
    """

    cpu_kind: str
    native_bf16: bool
    openvino: bool = None

    def has_openvino(self):
        """:attr:`openvino`, found out now when it is None."""
        if self.openvino is None:
            from .openvino_session import openvino_available

            return openvino_available()
        return self.openvino

    @classmethod
    def this(cls, cpu_kind=None):
        """This machine (``/proc/cpuinfo`` read once); ``cpu_kind`` overrides the detected kind."""
        from .cpu import cpu_info
        from .cpu import cpu_kind as kind_of
        from .openvino_session import has_native_bf16

        info = cpu_info()
        return cls(kind_of(info) if cpu_kind is None else cpu_kind, has_native_bf16(info["flags"]))
