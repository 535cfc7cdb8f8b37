"""The real Ray and pyarrow, or an error that says how to install them (the ``ray`` extra)."""

from ..errors import BackendUnavailableError


class RayUnavailableError(BackendUnavailableError, ImportError):
    """Ray (``ray[data]``) or pyarrow is not installed: ``pip install 'e5onnx[ray]'``.

    Also an :class:`ImportError`, so ``except ImportError`` around ``import e5onnx.ray...`` catches it.
    """


try:
    import pyarrow
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise RayUnavailableError(f"e5onnx.ray needs Ray Data and pyarrow: pip install 'e5onnx[ray]' ({exc})") from exc

__all__ = ["RayUnavailableError", "pyarrow", "ray"]
