"""Optional backend: OpenVINO running the very same ``model.onnx`` in bfloat16 (the ``bf16`` variant).

Install with ``pip install 'e5onnx[openvino]'``; onnxruntime stays the default and the only base backend.
OpenVINO's CPU plugin computes in bf16 when asked with ``INFERENCE_PRECISION_HINT=bf16`` on CPUs with
AVX512-BF16 or AMX-BF16 (https://docs.openvino.ai/ "Inference precision"); elsewhere it falls back to f32,
which :attr:`OpenVinoEncoder.precision` reports.
"""

import importlib
import threading

import numpy as np

from ..config import KNOWN_INPUTS, OUTPUT_NAME
from ..errors import BackendUnavailableError, E5OnnxError, ModelFolderError
from .cache import cache_dir
from .session import make_feed, resolve_threads

#: CPU flags (``/proc/cpuinfo`` names) with native bfloat16 arithmetic.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def openvino_available():
    """True when the ``openvino`` package imports (installed but broken, e.g. a missing shared library: False)."""
    try:
        importlib.import_module("openvino")
    except Exception:  # ImportError, OSError from its native libraries
        return False
    return True


def model_cache_dir():
    """Folder for OpenVINO's compiled-model cache (``CACHE_DIR``): the cache folder's ``openvino/``
    (:func:`~e5onnx.runtime.cache.cache_dir`), or None when caching is off or impossible.

    OpenVINO keys its entries by the model's content, the device and the compile options, so a changed file
    or setting compiles afresh. A cached compile cuts the bf16 cold start (benchmarks/README.md).
    """
    return cache_dir("openvino")


def has_native_bf16(flags):
    """True when ``flags`` (a :func:`~e5onnx.runtime.cpu.cpu_info` flag list) include AMX-BF16 or AVX512-BF16."""
    return any(f in flags for f in BF16_FLAGS)


_CORE = []
_CORE_LOCK = threading.Lock()


def _core(ov):
    """The process's one ``ov.Core``, made on first use.

    One Core serves every encoder (OpenVINO's advice, and cheaper), and it sidesteps an OpenVINO bug (seen with 2026.4): each
    Core's CPU plugin installs an alternate signal stack on the compiling thread and, when destroyed, puts back
    the one it found. Two Cores destroyed in creation order leave the thread pointing at the first one's freed
    stack, and the next signal with a Python handler (SIGTERM during an export) kills the process with SIGSEGV
    (tests/test_bf16.py reproduces it in a subprocess).
    """
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(ov.Core())
        return _CORE[0]


class OpenVinoEncoder:
    """An OpenVINO compiled model that maps padded token ids to ``last_hidden_state``.

    Same interface as :class:`~e5onnx.runtime.session.OnnxEncoder` (``run``, ``inputs``, ``id_dtype``,
    ``dim``, ``threads``).

    Args:
        path: the ``.onnx`` file (the fp32 export).
        threads: inference threads (default :func:`~e5onnx.runtime.session.default_threads`).
        precision: ``"bf16"`` or ``"f32"`` (OpenVINO ``INFERENCE_PRECISION_HINT``).

    The compiled model is cached in :func:`model_cache_dir` (``$E5ONNX_CACHE_DIR``; empty turns it off).

    Raises:
        BackendUnavailableError: the ``openvino`` package is not installed.
        ModelFolderError: OpenVINO cannot read or compile the file, or it lacks ``last_hidden_state``.
        InvalidInputError: bad ``threads``.
    """

    def __init__(self, path, threads=None, precision="bf16"):
        try:
            import openvino as ov
        except Exception as exc:  # not installed (ImportError) or broken (its native libraries)
            raise BackendUnavailableError(
                f"the bf16 variant runs on OpenVINO, which cannot be imported ({type(exc).__name__}: {exc}): "
                "pip install 'e5onnx[openvino]' (or pick variant='int8' / 'fp32')"
            ) from None
        self.threads = threads = resolve_threads(threads)
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        #: Folder of OpenVINO's compiled-model cache, or None (see :func:`model_cache_dir`).
        self.cache_dir = model_cache_dir()
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        try:
            # compile from the path (not a read model): with a cache hit OpenVINO then skips reading the ONNX
            self.compiled = _core(ov).compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own messages
            raise ModelFolderError(f"OpenVINO cannot load {str(path)!r}: {str(exc).strip()[:500]}") from exc
        #: Precision OpenVINO actually computes in (``"bf16"``, or ``"f32"`` on CPUs without bf16 units).
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.inputs = {}
        for port in self.compiled.inputs:
            name = port.get_any_name()
            if name not in KNOWN_INPUTS:
                raise ModelFolderError(f"{str(path)!r} declares input {name!r}; e5onnx feeds only {', '.join(KNOWN_INPUTS)}")
            self.inputs[name] = np.int32 if "i32" in str(port.get_element_type()) else np.int64
        names = {n for o in self.compiled.outputs for n in o.get_names()}
        if OUTPUT_NAME not in names:
            raise ModelFolderError(f"{str(path)!r} has no {OUTPUT_NAME!r} output (outputs: {sorted(names)})")
        self._output = next(o for o in self.compiled.outputs if OUTPUT_NAME in o.get_names())
        last = self._output.get_partial_shape()[-1]
        self.dim = last.get_length() if last.is_static else None
        self._local = threading.local()  # one infer request per calling thread

    @property
    def id_dtype(self):
        """NumPy dtype of the ``input_ids`` input."""
        return self.inputs["input_ids"]

    def run(self, input_ids, attention_mask):
        """``(batch, seq, dim)`` float32 ``last_hidden_state`` of one padded batch (see ``OnnxEncoder.run``).

        Raises:
            E5OnnxError: OpenVINO failed; the message gives the batch shape.
        """
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        feed = make_feed(self.inputs, input_ids, attention_mask)
        try:
            result = request.infer(feed)
        except Exception as exc:
            raise E5OnnxError(
                f"OpenVINO failed on a batch of {input_ids.shape[0]} texts x {input_ids.shape[1]} tokens: "
                f"{str(exc).strip()[:500]}"
            ) from None
        return np.array(result[self._output], dtype=np.float32, copy=True)
