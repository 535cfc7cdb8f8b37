"""Build the INT8 variant under a quality gate: calibrate, quantise, measure, keep MatMuls in fp32 if needed.

The gate (issue 9's, raised from issue 3's 0.997 / 0.985), measured against the fp32 ONNX graph (itself within 1e-5 of PyTorch, see parity) on
held-out validation texts:

- mean cosine ≥ ``int8_mean_cosine`` and min cosine ≥ ``int8_min_cosine`` (defaults 0.999 / 0.995);
- batch invariance: a text embedded alone and inside a batch of 32 mixed-length texts, cosine ≥
  ``int8_batch_cosine`` (0.9999).

Weight forms are tried fastest first (:func:`weight_forms`); when the last is missed, the weight GEMM with the
largest quantisation error (:func:`~.int8.sensitivity`) is kept in fp32 and the variant rebuilt, until the gate
passes or a quarter of the GEMMs are in fp32; then the export fails with the figures.
"""

import json
import logging
from importlib import resources

import numpy as np

from ..config import (
    INT8_CALIBRATION_BATCH,
    INT8_CALIBRATION_FILE,
    INT8_INVARIANCE_TEXTS,
    INT8_MAX_KEPT_FRACTION,
)
from ..config import (
    INT8_INVARIANCE_BATCH as INVARIANCE_BATCH,  # the old name: tests/test_packing.py reads it
)
from ..errors import ExportError
from ..runtime.cpu import cpu_info, cpu_kind, int8_saturates
from ..runtime.embedder import Embedder
from ..textfile import read_texts
from . import int8, int8_graph

log = logging.getLogger("e5onnx.export")


def split(texts):
    """``(calibration, validation)``: texts in pairs, alternately — 0, 1 calibrate; 2, 3 validate; 4, 5 ...

    Pairs, so that a file alternating queries and passages gives both kinds to each half.
    """
    return ([t for i, t in enumerate(texts) if i // 2 % 2 == 0], [t for i, t in enumerate(texts) if i // 2 % 2 == 1])


def calibration_texts(path=None):
    """``(calibration, validation, source)``: the texts of ``path`` (or the built-in set), see :func:`split`.

    Raises:
        ExportError: fewer than 8 texts.
        InvalidInputError: the file cannot be read (see :func:`~e5onnx.textfile.read_texts`).
    """
    if path is None:
        raw = resources.files("e5onnx.export").joinpath(INT8_CALIBRATION_FILE).read_text(encoding="utf-8")
        texts, source = [json.loads(line)["text"] for line in raw.splitlines() if line.strip()], "built-in"
    else:
        texts, source = read_texts(str(path), label="--calibration"), str(path)
    texts = [t for t in texts if t.strip()]
    if len(texts) < 8:
        raise ExportError(f"--calibration {source!r} has {len(texts)} non-empty texts; at least 8 are needed "
                          "(half calibrate, half validate)")
    calibration, validation = split(texts)
    return calibration, validation, source


def measure(want, candidate, texts):
    """Gate figures of ``candidate`` (an :class:`~e5onnx.runtime.Embedder`) against the reference vectors.

    Args:
        want: ``(len(texts), dim)`` reference (fp32) vectors of ``texts``, computed once by the caller and
            shared by every attempt of the sweep.
        candidate: the INT8 :class:`~e5onnx.runtime.Embedder`.
        texts: the validation texts.

    Returns:
        dict: ``texts``, ``mean_cosine``, ``min_cosine`` (over ``texts``, batches of 32 each side) and
        ``batch_invariance_min_cosine``: the first :data:`~e5onnx.config.INT8_INVARIANCE_BATCH` texts (mixed
        lengths) embedded in one real padded forward pass of that many rows (the token budget raised for it, so
        the short texts are padded to the longest), against the first
        :data:`~e5onnx.config.INT8_INVARIANCE_TEXTS` of them embedded alone.
    """
    got = candidate.embed(texts).astype(np.float64)
    cos = np.sum(want * got, axis=1)
    mixed = (texts * -(-INVARIANCE_BATCH // len(texts)))[:INVARIANCE_BATCH]  # always a full batch of 32
    one_pass = INVARIANCE_BATCH * candidate.max_length  # every text fits max_length: one pass of all 32
    batched = candidate.embed(mixed, batch_size=INVARIANCE_BATCH, token_budget=one_pass).astype(np.float64)
    alone = np.concatenate([candidate.embed([t]) for t in mixed[:INT8_INVARIANCE_TEXTS]]).astype(np.float64)
    worst = float(np.sum(alone * batched[:INT8_INVARIANCE_TEXTS], axis=1).min())
    return {"texts": len(texts), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "batch_invariance_min_cosine": worst}


def judge(figures, tolerances):
    """List of failure messages (empty: passed) of :func:`measure` figures against the tolerances."""
    failures = []
    for key, limit, flag in (("mean_cosine", tolerances.int8_mean_cosine, "--int8-mean-cosine"),
                             ("min_cosine", tolerances.int8_min_cosine, "--int8-min-cosine"),
                             ("batch_invariance_min_cosine", tolerances.int8_batch_cosine, "--int8-batch-cosine")):
        if figures[key] < limit:
            failures.append(f"{key.replace('_', ' ')} {figures[key]:.6f} < {limit} ({flag})")
    return failures


def weight_forms(kind):
    """Weight forms the gate tries, fastest first, as :func:`~.int8_graph.quantize` keyword arguments.

    Where onnxruntime's U8S8 kernels saturate (x86 without VNNI, :func:`~e5onnx.runtime.cpu.int8_saturates`):
    63-level int8 weights (U8S8, the fast kernels), then 127-level weights stored as uint8 (U8U8 kernels,
    exact, about 0.75x the U8S8 GEMM rate: ``benchmarks/README.md``). Elsewhere: 127-level int8 weights.
    """
    if int8_saturates(kind):
        return [{"weight_max": 63, "unsigned_weights": False}, {"weight_max": 127, "unsigned_weights": True}]
    return [{"weight_max": 127, "unsigned_weights": False}]


def form_name(form):
    """``"int8/127"``, ``"int8/63"`` or ``"uint8/127"``: storage and levels of a :func:`weight_forms` entry."""
    return f"{'uint8' if form['unsigned_weights'] else 'int8'}/{form['weight_max']}"


def build_int8(fp32_path, dst, tokenizer_path, *, max_length, pad_token_id, tolerances, threads=None,
               calibration=None, source_path=None):
    """Write the INT8 variant ``dst`` from ``source_path`` (the fused fp32 graph), meeting the gate or raising.

    Args:
        fp32_path: the fp32 ``model.onnx``: the reference the gate measures against.
        dst: output ``.onnx`` path.
        source_path: the fp32 graph to quantise: onnxruntime's fused BERT graph (O2, ``Attention`` /
            ``SkipLayerNormalization`` / ``BiasGelu``), same vectors as ``fp32_path`` within 1e-5 (default:
            ``fp32_path`` itself, unfused).
        tokenizer_path: ``tokenizer.json``.
        max_length, pad_token_id: as the export's.
        tolerances: :class:`~e5onnx.config.ParityTolerances` (``int8_*`` fields are the gate).
        threads: ONNX Runtime threads for the measurements.
        calibration: a text file (one per line, or ``.jsonl``) or ``None`` for :data:`~e5onnx.config.INT8_CALIBRATION_FILE`.

    Returns:
        dict for the manifest: the recipe (:func:`~.int8_graph.quantize`), ``cpu_kind``, ``calibration`` (source
        and counts), ``sensitivity`` (relative error per MatMul), ``gate`` (figures, tolerances, passed,
        every attempt).

    Raises:
        ExportError: the gate is still missed with a quarter of the MatMuls in fp32 (message has figures).
    """
    calib, valid, source = calibration_texts(calibration)
    reference = Embedder(fp32_path, tokenizer_path, max_length=max_length, threads=threads,
                         pad_token_id=pad_token_id)
    rows = sorted(reference.tokenize(calib), key=len)
    batches = [reference.pad(rows[i:i + INT8_CALIBRATION_BATCH])
               for i in range(0, len(rows), INT8_CALIBRATION_BATCH)]
    want = reference.embed(valid).astype(np.float64)
    del reference  # one large thing in memory at a time: e5-large-v2's fp32 graph is 1.3 GB
    kind = cpu_kind()
    source_path = fp32_path if source_path is None else source_path
    graph = int8.load(source_path)  # parsed once for the measurements below
    ranges, samples = int8.activation_ranges(graph, batches)
    attempts, forms = [], weight_forms(kind)
    for n_form, form in enumerate(forms):
        alphas = int8.choose_alphas(graph, ranges, samples, form["weight_max"])
        errors = int8.sensitivity(graph, ranges, samples, alpha=alphas, weight_max=form["weight_max"])
        if n_form == len(forms) - 1:
            del graph  # not needed again: quantize reads the file
        limit = int(len(errors) * INT8_MAX_KEPT_FRACTION) if n_form == len(forms) - 1 else 0  # sweep the last form
        keep = []
        while True:
            settings = int8_graph.quantize(source_path, dst, ranges, alpha=alphas, keep=keep, **form)
            candidate = Embedder(dst, tokenizer_path, max_length=max_length, threads=threads,
                                 pad_token_id=pad_token_id, variant="int8")
            figures = measure(want, candidate, valid)
            del candidate  # before the next attempt loads its own
            failures = judge(figures, tolerances)
            attempts.append({"form": form_name(form), "kept_fp32": list(keep), **figures, "failures": failures})
            log.info("int8 gate, %s weights, %d GEMMs in fp32: mean cos %.6f, min cos %.6f, batch invariance "
                     "%.6f%s", form_name(form), len(keep), figures["mean_cosine"], figures["min_cosine"],
                     figures["batch_invariance_min_cosine"], "" if not failures else " — " + "; ".join(failures))
            if not failures or len(keep) >= limit:
                break
            keep.append(next(name for name in errors if name not in keep))
        if not failures:
            break
    if failures:
        raise ExportError(
            f"INT8 quality gate missed with {len(keep)} of {len(errors)} MatMuls kept in fp32 "
            f"(calibration: {source}): " + "; ".join(failures)
            + ". Loosen the gate (--int8-* options), supply --calibration text like yours, or export without --quantize"
        )
    return {**settings, "weight_form": form_name(form), "cpu_kind": kind, "cpu": cpu_info(),
            "calibration": {"source": source, "calibration_texts": len(calib), "validation_texts": len(valid),
                            "calibration_tokens": int(sum(len(r) for r in rows))},
            "sensitivity": {k: round(v, 6) for k, v in errors.items()},
            "gate": {"passed": True, **figures, "tolerance": {
                "mean_cosine": tolerances.int8_mean_cosine, "min_cosine": tolerances.int8_min_cosine,
                "batch_invariance_min_cosine": tolerances.int8_batch_cosine}, "attempts": attempts}}
