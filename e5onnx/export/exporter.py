"""``export_model``: Hugging Face BERT / XLM-RoBERTa → ONNX variants → parity check → manifest, written atomically.

The folder is built in a hidden temporary folder beside the output and renamed into place only when every
variant passed its parity check, so a failed or interrupted export leaves nothing at the output path; an old
export there (``force``) is swapped for the new one so that a signal at any moment leaves one of the two.
"""

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..config import (
    DEFAULT_MODEL_ID,
    DEFAULT_OPSET,
    MANIFEST_FILE,
    OPSET_MAX,
    OPSET_MIN,
    OPTIMIZATION_LEVELS,
    QUANTIZATION_MODES,
    TOKENIZER_FILE,
    VARIANT_BACKENDS,
    VARIANT_FILES,
    ParityTolerances,
)
from ..environment import package_versions
from ..errors import E5OnnxError, ExportError, ModelFolderError
from ..runtime.arguments import whole_number
from ..runtime.atomic import default_mode, replace_folder
from ..runtime.cpu import cpu_kind
from ..runtime.embedder import Embedder
from ..runtime.folder import is_local
from ..runtime.manifest import Manifest
from ..runtime.openvino_session import openvino_available
from ..runtime.session import max_threads
from . import graph
from .int8_gate import build_int8
from .parity import ReferenceBattery, check_report, format_report, run_parity
from .ranges import embedding_ranges
from .record import export_manifest
from .skip_layer_norm import split_file
from .source import read_config, resolve_source
from .support import (
    check_max_length,
    check_supported,
    default_max_length,
    position_limit,
)

log = logging.getLogger("e5onnx.export")

def _check_args(output, quantize, optimize, opset, max_length, force, bf16):
    if bf16 and not openvino_available():
        raise ExportError("--bf16 records the OpenVINO bf16 variant and needs OpenVINO: pip install 'e5onnx[openvino]'")
    if quantize not in (None, *QUANTIZATION_MODES):
        raise ExportError(f"--quantize must be one of {QUANTIZATION_MODES}, got {quantize!r}")
    if optimize not in (None, *OPTIMIZATION_LEVELS):
        raise ExportError(f"--optimize must be one of {OPTIMIZATION_LEVELS}, got {optimize!r}")
    if not isinstance(opset, int) or not OPSET_MIN <= opset <= OPSET_MAX:
        raise ExportError(f"--opset must be an int from {OPSET_MIN} to {OPSET_MAX}, got {opset!r}")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ExportError(f"--max-length must be an int >= 2, got {max_length!r}")
    output = Path(output).expanduser().absolute()
    if output.exists() and not force:
        raise ExportError(f"output {str(output)!r} already exists; pass --force to replace it")
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {str(output)!r} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        try:
            Manifest.read(output)
        except ModelFolderError:
            raise ExportError(
                f"refusing to replace {str(output)!r}: it is not an e5onnx model folder (no valid "
                f"{MANIFEST_FILE}); --force only replaces earlier exports. Remove it yourself or pick another "
                "--output"
            ) from None
    if output.parent.exists() and not output.parent.is_dir():
        raise ExportError(f"the parent of output {str(output)!r} is not a folder")
    return output


def _check_not_inside(source_dir, output):
    source_dir = Path(source_dir).resolve()
    resolved = output.resolve()
    if resolved == source_dir or resolved in source_dir.parents:
        raise ExportError(
            f"output {str(output)!r} would replace the source model folder {str(source_dir)!r}; pick another --output"
        )
    if source_dir in resolved.parents:
        raise ExportError(
            f"output {str(output)!r} is inside the source model folder {str(source_dir)!r} (or the Hugging Face "
            "cache); pick an --output outside it"
        )


@contextmanager
def _signals_as_exit():
    """Turn SIGTERM and SIGINT into ``SystemExit(128 + signal)`` while exporting (main thread only), so the
    temporary folder is removed and the exit status is 143 / 130.

    SIGINT is not left to Python's KeyboardInterrupt: one raised while a C extension runs Python code (torch
    and optimum do during import) marks the interpreter, which then kills itself with SIGINT at exit even
    though the exception was caught (seen: exit status -2 instead of 130, about one run in seven).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        print("interrupted", file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _libraries_quiet():
    """transformers' and optimum's own loggers at ERROR while optimum exports (their warnings, such as
    "`torch_dtype` is deprecated" or "Weight deduplication check ... requires accelerate", are about their
    internals, not the export); e5onnx's log lines are untouched."""
    from optimum.utils import logging as optimum_logging
    from transformers.utils import logging as transformers_logging

    levels = [(lib, lib.get_verbosity()) for lib in (transformers_logging, optimum_logging)]
    for lib, _ in levels:
        lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, level in levels:
            lib.set_verbosity(level)


def _export_fp32(source_dir, tmp, opset):
    from optimum.exporters.onnx import main_export

    with warnings.catch_warnings(), _libraries_quiet():
        # torch's tracer warns about constants in the attention-mask code and about its legacy exporter;
        # both are expected for BERT, and parity below is the real check.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TracerWarning.*|.*torch.tensor results are registered.*")
        main_export(str(source_dir), output=str(tmp), task="feature-extraction", opset=opset, device="cpu",
                    do_validation=False, library_name="transformers", local_files_only=True)
    fp32 = tmp / VARIANT_FILES["fp32"]
    if not fp32.is_file() or not (tmp / TOKENIZER_FILE).is_file():
        raise ExportError(f"optimum wrote no {VARIANT_FILES['fp32']} / {TOKENIZER_FILE} (source has no fast tokenizer?)")
    return fp32


def _place(tmp, output, force):
    """Move the finished folder ``tmp`` to ``output``, replacing an old one only now that the new one is ready
    (:func:`~e5onnx.runtime.atomic.replace_folder`: the output holds the old export or the new one at every
    moment, and SIGTERM / Ctrl-C are held until the swap is done, then handled: exit 143 / 130)."""
    if output.exists() and not force:  # another export finished there while this one ran
        raise ExportError(f"output {str(output)!r} appeared while exporting; pass --force to replace it")
    replace_folder(tmp, output)


def export_model(model=DEFAULT_MODEL_ID, output=None, *, quantize=None, optimize=None, opset=DEFAULT_OPSET,
                 revision=None, max_length=None, force=False, tolerances=ParityTolerances(), threads=None,
                 calibration=None, bf16=False, fallback=None):
    """Export a Hugging Face BERT or XLM-RoBERTa embedding model (mean pooling) to a verified e5onnx model folder.

    Args:
        model: Hub id (default ``intfloat/e5-small``) or local Hugging Face folder.
        fallback: Hub id or local folder exported instead when ``model`` is a Hub id that cannot be had from
            the Hub (offline, unreachable) or its HF cache; a warning says so (see
            :func:`~e5onnx.export.source.resolve_source`).
        output: the model folder to create.
        quantize: ``None`` or ``"int8"`` (adds ``model_int8.onnx``, built under the INT8 quality gate, see
            :mod:`e5onnx.export.int8_gate`).
        optimize: ``None``, ``"O1"``, ``"O2"`` or ``"O3"`` (adds ``model_optimized.onnx``).
        opset: ONNX opset for optimum's exporter.
        revision: Hub branch, tag or commit.
        max_length: tokens per text the folder is made for (at most the model's positions); default: the
            smallest of the source's sentence-transformers ``max_seq_length`` (256 for all-MiniLM-L6-v2), its
            tokenizer's ``model_max_length`` and its position table (512 for BERT's 512 and XLM-RoBERTa's 514
            positions), see :func:`~e5onnx.export.support.default_max_length`.
        force: replace an existing ``output``.
        tolerances: :class:`~e5onnx.config.ParityTolerances` for the parity check.
        threads: ONNX Runtime threads used by the parity check.
        calibration: text file (one text per line, or ``.jsonl``) to calibrate and validate INT8 on
            (default: the built-in set); split by :func:`~e5onnx.export.int8_gate.split`.
        bf16: also record the ``bf16`` variant: OpenVINO running ``model.onnx`` in bfloat16 (no new file;
            needs the ``openvino`` extra), parity-checked like the others.

    Returns:
        The :class:`~e5onnx.runtime.manifest.Manifest` written to ``output/manifest.json``.

    Raises:
        ExportError: bad arguments, an existing ``output`` without ``force``, an unusable source, a model e5onnx
            cannot serve correctly (another architecture, a decoder, CLS or other non-mean pooling, no fast
            tokenizer: :func:`~e5onnx.export.support.check_supported`, the message says why), or a failed export
            step. ParityError (a subclass) when a variant is over its tolerance; its
            ``.report`` holds the per-variant figures. In every case nothing is left at ``output``
            (a missing parent folder is created). ``force`` replaces only an earlier export (a folder with
            a valid manifest) or an empty folder, never the source. SIGTERM and Ctrl-C remove the
            temporary folder before exiting.
    """
    if output is None:
        raise ExportError("an output folder is required")
    if is_local(model):  # the most specific refusal first
        _check_not_inside(model, Path(output).expanduser().absolute())
    output = _check_args(output, quantize, optimize, opset, max_length, force, bf16)
    if threads is not None:
        whole_number("threads", threads, 1, max_threads())
    if calibration is not None and not quantize:
        raise ExportError("--calibration is only used with --quantize int8")
    if calibration is not None and not Path(calibration).is_file():
        raise ExportError(f"--calibration {str(calibration)!r} is not a readable file")
    with _signals_as_exit():
        return _export(model, output, quantize, optimize, opset, revision, max_length, tolerances, threads, force,
                       calibration, bf16, fallback)


def _build_int8(fp32, tmp, optimize, config, max_length, pad_token_id, tolerances, threads, calibration):
    """The INT8 variant, quantised from onnxruntime's fused (O2) graph: ``model_optimized.onnx`` when the export
    makes it at O2, else a fused graph made for it and removed after."""
    log.info("quantising to INT8 (SmoothQuant + per-token activations, fused graph) under the quality gate")
    fused = tmp / VARIANT_FILES["optimized"]
    made = optimize != "O2"
    if made:
        fused = tmp / ".int8-source.onnx"
        graph.optimize(fp32, fused, "O2", config["num_attention_heads"], config["hidden_size"])
    try:
        settings = build_int8(fp32, tmp / VARIANT_FILES["int8"], tmp / TOKENIZER_FILE, max_length=max_length,
                              pad_token_id=pad_token_id, tolerances=tolerances, threads=threads,
                              calibration=calibration, source_path=fused)
    finally:
        if made:
            fused.unlink(missing_ok=True)
    return {**settings, "source_graph": "onnxruntime BERT fusions (O2)"}


def _export(model, output, quantize, optimize, opset, revision, max_length, tolerances, threads, force, calibration,
            bf16, fallback):
    started = time.perf_counter()
    source_dir, source = resolve_source(model, revision, fallback)
    model = source["id"]  # the fallback's, when it was taken
    _check_not_inside(source_dir, output)
    config = read_config(source_dir)
    facts = check_supported(source_dir, config)  # refuses what cannot be served, before any export work
    if max_length is None:
        max_length = default_max_length(source_dir, config, facts["tokenizer"]["model_max_length"])
    check_max_length(max_length, config)
    config = {**config, "position_limit": position_limit(config), **facts}

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp creates 0o700
        log.info("exporting %s to ONNX (opset %d) with optimum", model, opset)
        fp32 = _export_fp32(source_dir, tmp, opset)
        variants = {"fp32": {"file": fp32.name}}
        if optimize:
            log.info("optimising (%s, onnxruntime transformer fusions)", optimize)
            settings = graph.optimize(fp32, tmp / VARIANT_FILES["optimized"], optimize,
                                      config["num_attention_heads"], config["hidden_size"])
            variants["optimized"] = {"file": VARIANT_FILES["optimized"], "optimization": settings}
        pad_token_id = config["tokenizer"]["pad_token_id"]  # the HF fast tokenizer's (check_supported)
        if quantize:
            variants["int8"] = {"file": VARIANT_FILES["int8"],
                                "quantization": _build_int8(fp32, tmp, optimize, config, max_length, pad_token_id,
                                                            tolerances, threads, calibration)}
        if optimize:  # after the INT8 build, which quantises the fused graph as onnxruntime wrote it
            variants["optimized"]["optimization"]["skip_layer_norm_split"] = split_file(tmp / VARIANT_FILES["optimized"])
        if bf16:
            backend, precision = VARIANT_BACKENDS["bf16"]
            variants["bf16"] = {"file": VARIANT_FILES["bf16"], "backend": backend, "precision": precision}

        log.info("parity check against the PyTorch reference")
        from .reference import TorchReference

        # the PyTorch model only now, and only while the battery runs: e5-large-v2's is 1.3 GB
        ref = ReferenceBattery(TorchReference(source_dir, max_length))
        report, dim = {}, None
        for name, entry in variants.items():
            embedder = Embedder(tmp / entry["file"], tmp / TOKENIZER_FILE, max_length=max_length,
                                threads=threads, pad_token_id=pad_token_id, variant=name)
            dim = embedder.dim
            if name == "bf16":  # what OpenVINO computes in on this CPU, and which CPU that was
                entry.update(precision_effective=embedder.encoder.precision, cpu_kind=cpu_kind(),
                             openvino=package_versions(["openvino"])["openvino"])
            report[name] = entry["parity"] = run_parity(embedder, ref, name, tolerances)
            if name == "fp32":  # int8 / uint8 output vectors: fixed ranges from the fp32 graph
                ranges = embedding_ranges(embedder)
            del embedder  # one session at a time
        for line in format_report(report):
            log.info("%s", line)

        manifest = export_manifest(tmp, source, config, dim, max_length, pad_token_id, variants, tolerances,
                             time.perf_counter() - started, ranges)
        check_report(report)
        manifest.write(tmp)
        _place(tmp, output, force)
        log.info("wrote %s", output)
        return manifest
    except E5OnnxError:
        raise
    except Exception as exc:
        raise ExportError(f"export of {model!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
