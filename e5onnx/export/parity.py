"""Parity of exported ONNX variants with the PyTorch reference, on the built-in battery.

For each variant: token ids must equal the HF fast tokenizer's; on L2-normalised embeddings we measure
the largest element-wise ``|Δ|``, and the min and mean cosine similarity, both for the battery embedded in
one padded batch and for each text embedded alone, against the reference's padded batch. fp32 and
optimized are judged on max ``|Δ|``; int8 and bf16 on their per-text min cosine (see
:class:`~e5onnx.config.ParityTolerances`). The int8 mean cosine is reported but judged by the INT8 quality
gate on natural validation text (:mod:`~e5onnx.export.int8_gate`): the battery is 19 edge cases (three
of them empty or blank, i.e. the same ``[CLS] [SEP]`` input), whose mean is not a quality figure.
"""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import VARIANTS, ParityTolerances
from ..errors import ExportError, ParityError
from ..runtime.embedder import Embedder
from ..runtime.folder import is_local
from ..runtime.manifest import Manifest
from .battery import battery

log = logging.getLogger("e5onnx.export")


class ReferenceBattery:
    """Reference token ids and embeddings of the battery, computed once and shared by every variant.

    Args:
        reference: a :class:`~e5onnx.export.reference.TorchReference`.
        texts: texts to use (default: :func:`~e5onnx.export.battery.battery`).
    """

    def __init__(self, reference, texts=None):
        self.texts = list(texts) if texts is not None else battery()
        self.token_ids = [list(ids) for ids in reference.token_ids(self.texts)]
        self.embeddings = reference.embed(self.texts)


def _compare(got, want):
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    cos = np.sum(got.astype(np.float64) * want.astype(np.float64), axis=1)  # both are unit vectors
    return diff, float(cos.min()), float(cos.mean())


def run_parity(embedder, ref, variant, tolerances=ParityTolerances()):
    """Check one variant against the reference.

    Args:
        embedder: the :class:`~e5onnx.runtime.Embedder` of the variant.
        ref: a :class:`ReferenceBattery`.
        variant: ``"fp32"``, ``"optimized"`` or ``"int8"`` (picks the tolerance).
        tolerances: :class:`~e5onnx.config.ParityTolerances`.

    Returns:
        dict with ``passed`` (bool), ``failures`` (list of str), ``texts`` (count), ``token_ids_equal``,
        ``token_id_mismatches`` (indices), ``max_abs_diff``, ``min_cosine``, ``mean_cosine`` (worst of the
        batched run — one padded forward pass of every text — and the one-by-one runs),
        ``single_vs_batch_max_abs_diff`` and the ``tolerance`` applied.
    """
    texts = ref.texts
    ids = embedder.tokenize(texts)
    mismatches = [i for i, (a, b) in enumerate(zip(ids, ref.token_ids)) if list(a) != b]
    # One real padded forward pass of every battery text (the token budget raised for it): each short text
    # is padded to the longest, as in the reference's padded batch.
    batched = embedder.embed(texts, batch_size=len(texts), token_budget=len(texts) * embedder.max_length)
    single = np.concatenate([embedder.embed([t]) for t in texts])
    d_b, min_b, mean_b = _compare(batched, ref.embeddings)
    d_s, min_s, mean_s = _compare(single, ref.embeddings)
    result = {
        "texts": len(texts),
        "token_ids_equal": not mismatches,
        "token_id_mismatches": mismatches,
        "max_abs_diff": max(d_b, d_s),
        "min_cosine": min(min_b, min_s),
        "mean_cosine": min(mean_b, mean_s),
        "single_vs_batch_max_abs_diff": float(np.abs(single - batched).max()),
    }
    failures = []
    if mismatches:
        failures.append(f"token ids differ from the HF fast tokenizer for texts {mismatches}")
    if variant in ("int8", "bf16"):
        tol = {"min_cosine": tolerances.int8_min_cosine if variant == "int8" else tolerances.bf16_min_cosine}
        if result["min_cosine"] < tol["min_cosine"]:
            failures.append(f"min cosine {result['min_cosine']:.6f} < {tol['min_cosine']}")
    else:
        limit = tolerances.optimized_max_abs if variant == "optimized" else tolerances.fp32_max_abs
        tol = {"max_abs_diff": limit}
        if result["max_abs_diff"] > limit:
            flag = "--optimized-max-abs" if variant == "optimized" else "--fp32-max-abs"
            failures.append(f"max |Δ| {result['max_abs_diff']:.3g} > {limit:g} (gate set by {flag}"
                            + ("; O3's GELU approximation typically needs 1e-3" if variant == "optimized" else "")
                            + ")")
    result.update(tolerance=tol, passed=not failures, failures=failures)
    return result


def format_report(report):
    """Human-readable lines for a ``{variant: result}`` parity report."""
    lines = []
    for variant, r in report.items():
        status = "PASS" if r["passed"] else "FAIL"
        lines.append(
            f"{status} {variant:<9} texts={r['texts']} token_ids_equal={r['token_ids_equal']} "
            f"max|Δ|={r['max_abs_diff']:.2e} min_cos={r['min_cosine']:.6f} mean_cos={r['mean_cosine']:.6f} "
            f"single_vs_batch|Δ|={r['single_vs_batch_max_abs_diff']:.2e} gate={r['tolerance']}"
        )
        lines.extend(f"     - {f}" for f in r["failures"])
    return lines


def check_report(report):
    """Raise :class:`~e5onnx.errors.ParityError` with the full report when any variant failed."""
    failed = [v for v, r in report.items() if not r["passed"]]
    if failed:
        raise ParityError(
            f"parity check failed for {', '.join(failed)}:\n" + "\n".join(format_report(report)), report
        )


def verify_folder(folder, source=None, threads=None, tolerances=None, revision=None, overrides=None):
    """Re-run the parity check of every variant in an exported folder against the PyTorch reference.

    Args:
        folder: the exported model folder (its files are checked against the manifest's sha256).
        source: the Hugging Face model to compare with (default: the manifest's source path if it
            still exists, else its Hub id at the recorded revision).
        threads: ONNX Runtime threads.
        tolerances: :class:`~e5onnx.config.ParityTolerances` (default: those recorded in the manifest,
            with ``overrides``, a dict of field -> value, applied on top).

    Returns:
        ``{variant: result}`` as :func:`run_parity` returns.

    Raises:
        ParityError: a variant is over its tolerance (``.report`` has the details).
        ExportError: ``folder`` is not a local folder, or the recorded source folder is gone.
        ModelFolderError / IntegrityError: the folder is incomplete or a file was changed.
    """
    from .reference import TorchReference
    from .source import resolve_source

    if not is_local(folder):
        raise ExportError(f"no such model folder {str(folder)!r} (verify takes a local e5onnx export)")
    manifest = Manifest.read(folder)
    # Check every file against the manifest before the (slow) PyTorch reference is built.
    embedders = {v: Embedder.load(folder, variant=v, threads=threads) for v in VARIANTS if v in manifest.variants}
    if tolerances is None:
        tolerances = replace(manifest.tolerances, **(overrides or {}))
    if source is None:
        src = manifest.source
        if src.path:
            if not Path(src.path).is_dir():
                raise ExportError(f"the source folder recorded in the manifest, {src.path!r}, no longer "
                                  "exists; pass --source with the model's folder or Hub id")
            source = src.path
        else:
            source, revision = src.id, revision or src.revision
    source_dir, _ = resolve_source(source, revision)
    log.info("verifying %s against %s (PyTorch reference, max length %d)", folder, source_dir, manifest.max_length)
    ref = ReferenceBattery(TorchReference(source_dir, manifest.max_length))
    report = {v: run_parity(e, ref, v, tolerances) for v, e in embedders.items()}
    check_report(report)
    return report
