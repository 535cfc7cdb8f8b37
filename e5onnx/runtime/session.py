"""One ONNX Runtime CPU session per model, with thread settings and a feed built from declared inputs."""

import os

import numpy as np
import onnxruntime as ort

from ..config import (
    KNOWN_INPUTS,
    ORT_ALLOW_SPINNING,
    ORT_ARENA_SHRINKAGE,
    ORT_DISABLED_OPTIMIZERS,
    OUTPUT_NAME,
    THREADS_ENV,
)
from ..errors import E5OnnxError, InvalidInputError, ModelFolderError
from .arguments import whole_number
from .cpu import available_cpus

#: ONNX integer input types e5onnx feeds -> NumPy dtype.
ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def max_threads():
    """Largest accepted thread count: the machine's logical CPUs (more only oversubscribes the cores)."""
    return os.cpu_count() or 1


def default_threads():
    """Intra-op thread count: ``$E5ONNX_THREADS`` if set, else the CPUs this process may use.

    Raises:
        InvalidInputError: ``$E5ONNX_THREADS`` is not a whole number from 1 to :func:`max_threads`.
    """
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise InvalidInputError(f"{THREADS_ENV}={env!r} is not a whole number") from None
        return whole_number(f"{THREADS_ENV}={env!r}", value, 1, max_threads())
    return available_cpus()


def resolve_threads(threads):
    """``threads`` checked as a whole number from 1 to :func:`max_threads`, or :func:`default_threads` for None.

    Raises:
        InvalidInputError: a bad ``threads`` or ``$E5ONNX_THREADS``.
    """
    return whole_number("threads", default_threads() if threads is None else threads, 1, max_threads())


def make_feed(inputs, input_ids, attention_mask):
    """The graph's feed: ``{name: C-contiguous array}`` for each declared input (``{name: dtype}``);
    ``token_type_ids`` is all zeros (a single segment)."""
    feed = {}
    for name, dtype in inputs.items():
        if name == "input_ids":
            feed[name] = np.ascontiguousarray(input_ids, dtype=dtype)
        elif name == "attention_mask":
            feed[name] = np.ascontiguousarray(attention_mask, dtype=dtype)
        else:
            feed[name] = np.zeros(input_ids.shape, dtype=dtype)
    return feed


def session_options(threads):
    """``(SessionOptions, RunOptions)`` as every e5onnx onnxruntime session uses them (also the benchmark's
    roofline and sentence-transformers contenders, so all sides idle and spin alike).

    ``threads`` intra-op threads (a resolved whole number), inter-op 1, sequential execution, all graph
    optimisations; threads spin between the ops of a run and stop when it returns
    (:data:`~e5onnx.config.ORT_ALLOW_SPINNING`, ``session.force_spinning_stop``); arena shrinkage after each
    run per :data:`~e5onnx.config.ORT_ARENA_SHRINKAGE`; onnxruntime's own log silenced (failures are raised).
    Pass :data:`~e5onnx.config.ORT_DISABLED_OPTIMIZERS` as ``disabled_optimizers`` when creating the session.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_ALLOW_SPINNING else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    run_options = ort.RunOptions()
    if ORT_ARENA_SHRINKAGE:
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options, run_options


class OnnxEncoder:
    """An ONNX Runtime session that maps padded token ids to ``last_hidden_state``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default :func:`default_threads`), at most the machine's CPU count;
            inter-op is 1 (sequential graph). Threads spin between the ops of a run and stop when it returns;
            the arena keeps its memory between runs (:data:`~e5onnx.config.ORT_ALLOW_SPINNING`,
            :data:`~e5onnx.config.ORT_ARENA_SHRINKAGE`).

    Raises:
        ModelFolderError: the file is not a loadable ONNX model, declares an input other than
            ``input_ids`` / ``attention_mask`` / ``token_type_ids``, or has no ``last_hidden_state`` output.
        InvalidInputError: ``threads`` is not a whole number from 1 to :func:`max_threads`.
    """

    def __init__(self, path, threads=None):
        self.threads = threads = resolve_threads(threads)
        options, self.run_options = session_options(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"],
                                                disabled_optimizers=ORT_DISABLED_OPTIMIZERS)
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelFolderError(f"onnxruntime cannot load {str(path)!r}: {exc}") from exc
        self.inputs = {}
        for arg in self.session.get_inputs():
            if arg.name not in KNOWN_INPUTS or arg.type not in ORT_INT_TYPES:
                raise ModelFolderError(
                    f"{str(path)!r} declares input {arg.name!r} of type {arg.type}; e5onnx feeds only "
                    f"{', '.join(KNOWN_INPUTS)} as int64/int32"
                )
            self.inputs[arg.name] = ORT_INT_TYPES[arg.type]
        if "input_ids" not in self.inputs:
            raise ModelFolderError(f"{str(path)!r} declares no 'input_ids' input")
        outputs = {o.name: o for o in self.session.get_outputs()}
        if OUTPUT_NAME not in outputs:
            raise ModelFolderError(f"{str(path)!r} has no {OUTPUT_NAME!r} output (outputs: {sorted(outputs)})")
        dim = outputs[OUTPUT_NAME].shape[-1]
        self.dim = dim if isinstance(dim, int) else None

    @property
    def id_dtype(self):
        """NumPy dtype of the ``input_ids`` input (int64 for optimum exports)."""
        return self.inputs["input_ids"]

    def run(self, input_ids, attention_mask):
        """Run the graph on one padded batch.

        Args:
            input_ids: ``(batch, seq)`` of :attr:`id_dtype`.
            attention_mask: ``(batch, seq)`` of the same dtype, 1 for real tokens.

        Returns:
            ``(batch, seq, dim)`` float32 ``last_hidden_state``.

        Raises:
            E5OnnxError: onnxruntime failed (out of memory, a sequence longer than the graph's position
                table, a token id outside the vocabulary); the message gives the batch shape.
        """
        feed = make_feed(self.inputs, input_ids, attention_mask)
        try:
            (hidden,) = self.session.run([OUTPUT_NAME], feed, self.run_options)
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise E5OnnxError(
                f"onnxruntime failed on a batch of {input_ids.shape[0]} texts x {input_ids.shape[1]} tokens: "
                f"{str(exc).strip()[:500]}"
            ) from None
        return hidden
