"""The ``e5onnx`` command line's argument parser: every flag, its help (defaults read from :mod:`e5onnx.config`)
and its range, checked while parsing so that a bad value is a usage error (exit status 2, argparse's usage
message naming the flag), like an unknown flag or a value of the wrong type."""

import argparse
import math

from . import __version__
from . import config as C
from .config import ParityTolerances

_DEFAULT_TOL = ParityTolerances()
_VARIANT_CHOICES = [*C.VARIANTS, "auto"]


def whole(minimum=1, maximum=None):
    """An argparse ``type``: a whole number from ``minimum`` to ``maximum`` (None: no bound; a callable: the bound,
    looked up only when the flag is given).

    Raises (when parsing):
        argparse.ArgumentTypeError: not a whole number, or out of range (argparse names the flag and exits 2).
    """
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        top = maximum() if callable(maximum) else maximum
        if value < minimum or (top is not None and value > top):
            bounds = f">= {minimum}" if top is None else f"from {minimum} to {top}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {value}")
        return value

    return parse


def tolerance(kind):
    """An argparse ``type`` for a parity tolerance: ``"max_abs"`` a finite number >= 0, ``"cosine"`` one from -1
    to 1 (the ranges :class:`~e5onnx.config.ParityTolerances` enforces).

    Raises (when parsing):
        argparse.ArgumentTypeError: not a number, NaN, infinite or out of range.
    """
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value >= 0 if kind == "max_abs" else -1 <= value <= 1)
        if not ok:
            allowed = "a finite number >= 0" if kind == "max_abs" else "a number from -1 to 1"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse


def _cpus():
    from .runtime.session import max_threads

    return max_threads()


_THREADS = whole(1, _cpus)


def build_parser():
    """The ``e5onnx`` parser; each subcommand's namespace carries its own parser as ``subparser`` (for usage
    errors found after parsing, reported with that subcommand's usage)."""
    parser = argparse.ArgumentParser(prog="e5onnx", description="Torch-free ONNX Runtime inference for "
                                     "intfloat/e5-small and an exporter that proves parity.")
    parser.add_argument("--version", action="version", version=f"e5onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_export, _add_verify, _add_bench, _add_info, _add_embed, _add_corpus, _add_serve):
        p = add(sub)
        p.set_defaults(subparser=p)
    return parser


def _add_export(sub):
    p = sub.add_parser("export", help="export a Hugging Face model to a verified ONNX model folder (needs torch)")
    p.add_argument("model", nargs="?", default=C.DEFAULT_MODEL_ID,
                   help=f"Hub id or local Hugging Face folder (default {C.DEFAULT_MODEL_ID})")
    p.add_argument("--output", "-o", required=True, help="model folder to create")
    p.add_argument("--fallback", metavar="PATH_OR_ID",
                   help="when MODEL (a Hub id) cannot be had from the Hub or its HF cache (offline, unreachable), "
                        "export this local folder or Hub id instead, and say so on stderr")
    p.add_argument("--quantize", choices=C.QUANTIZATION_MODES,
                   help="also write model_int8.onnx (SmoothQuant + per-token INT8, must pass the INT8 quality gate)")
    p.add_argument("--calibration", metavar="FILE",
                   help="texts to calibrate and validate INT8 on (one per line or .jsonl; default: built-in set)")
    p.add_argument("--optimize", choices=C.OPTIMIZATION_LEVELS, help="also write model_optimized.onnx (ORT fusions)")
    p.add_argument("--bf16", action="store_true",
                   help="also record the bf16 variant (OpenVINO runs model.onnx in bfloat16; needs e5onnx[openvino])")
    p.add_argument("--opset", type=whole(C.OPSET_MIN, C.OPSET_MAX), default=C.DEFAULT_OPSET,
                   help=f"ONNX opset, {C.OPSET_MIN} to {C.OPSET_MAX} (default {C.DEFAULT_OPSET})")
    p.add_argument("--revision", help="Hub branch, tag or commit")
    p.add_argument("--max-length", type=whole(2),
                   help="tokens per text (default: the smallest of the model's sentence-transformers "
                        "max_seq_length, its tokenizer's model_max_length and its position table)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--threads", type=_THREADS, help="ONNX Runtime threads for the parity check")
    _add_tolerances(p)
    return p


def _add_verify(sub):
    p = sub.add_parser("verify", help="re-run the parity check of a model folder against PyTorch (needs torch)")
    p.add_argument("folder")
    p.add_argument("--source", help="Hugging Face model to compare with (default: the manifest's source)")
    p.add_argument("--threads", type=_THREADS)
    _add_tolerances(p, default=None)
    return p


def _add_bench(sub):
    p = sub.add_parser("bench", help="side-by-side speed vs the PyTorch reference and fastembed (bench extra)")
    p.add_argument("folder", help="exported model folder")
    p.add_argument("--out", required=True, help="folder for results.json and results.md")
    p.add_argument("--source", help="Hugging Face folder for the PyTorch reference (default: the manifest's)")
    p.add_argument("--threads", type=_THREADS, default=C.BENCH_THREADS,
                   help=f"threads of every contender (default {C.BENCH_THREADS})")
    p.add_argument("--repeats", type=whole(1), default=C.BENCH_REPEATS,
                   help=f"timed repeats, median reported (default {C.BENCH_REPEATS})")
    p.add_argument("--passages", type=whole(1), default=C.BENCH_PASSAGES,
                   help=f"SciFact passages (default {C.BENCH_PASSAGES})")
    p.add_argument("--queries", type=whole(1), default=C.BENCH_QUERIES,
                   help=f"SciFact queries (default {C.BENCH_QUERIES})")
    p.add_argument("--quick", action="store_true", help="tiny workload: only checks that the harness runs")
    p.add_argument("--skip", action="append", default=[], choices=["torch", "fastembed", "st"],
                   help="leave a contender out (st: sentence-transformers, ONNX fp32 and int8)")
    p.add_argument("--no-quality", action="store_true", help="skip STS-B and SciFact (random-weight models)")
    p.add_argument("--no-scifact", action="store_true", help="skip SciFact nDCG@10 (~5 min per variant)")
    p.add_argument("--label", help="title of the tables and plot")
    return p


def _add_info(sub):
    p = sub.add_parser("info", help="print a model folder's manifest summary as JSON")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("--full", action="store_true", help="print the whole manifest")
    return p


def _add_embed(sub):
    p = sub.add_parser("embed", help="embed texts; JSON lines on stdout, or --output X.npy")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --input)")
    p.add_argument("--input", "-i", metavar="FILE",
                   help="UTF-8 file, one text per line, empty lines kept ('-' for stdin); *.jsonl or --jsonl: "
                        "one JSON object with a 'text' string (or a JSON string) per line, blank lines skipped, "
                        "duplicate keys refused")
    p.add_argument("--jsonl", action="store_true", help="read --input as JSON lines whatever its name")
    p.add_argument("--output", "-o", metavar="X.npy",
                   help="write an (n, dim) .npy (float32, or the --vectors form's dtype) instead of JSON lines")
    p.add_argument("--variant", default=C.DEFAULT_VARIANT, choices=_VARIANT_CHOICES,
                   help=f"default {C.DEFAULT_VARIANT}")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--query", action="store_true", help=f"add {C.QUERY_PREFIX!r} once to each text")
    kind.add_argument("--passage", action="store_true", help=f"add {C.PASSAGE_PREFIX!r} once to each text")
    p.add_argument("--batch-size", type=whole(1), default=C.DEFAULT_BATCH_SIZE,
                   help=f"texts per forward pass (default {C.DEFAULT_BATCH_SIZE})")
    p.add_argument("--threads", type=_THREADS, help="inference threads (default: the CPUs this process may use)")
    long = p.add_mutually_exclusive_group()
    long.add_argument("--no-truncate", action="store_true", help="refuse texts over max length instead of cutting")
    long.add_argument("--windows", action="store_true",
                      help="embed a text over max length whole, as overlapping windows (token-weighted mean)")
    p.add_argument("--vectors", choices=C.OUTPUT_FORMS, default="float",
                   help="vector form: float (default); int8 / uint8 (fixed ranges from the export); binary / "
                        "ubinary (8 dimensions per byte)")
    return p


def _add_corpus(sub):
    p = sub.add_parser("corpus", help="embed a whole corpus into Parquet shards: streaming, resumable, "
                       "optionally on Ray (corpus extra)",
                       description="Writes OUT/part-*.parquet (columns id, embedding, --keep columns, in input "
                                   "order) and OUT/_e5onnx_run.json; while running, OUT.partial.")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("--input", "-i", required=True, nargs="+", metavar="SRC",
                   help="one or more files read in order as one input (.jsonl, .parquet, .csv, .tsv, .txt), "
                        "or '-' for stdin")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder")
    p.add_argument("--format", dest="fmt", choices=("jsonl", "csv", "tsv", "txt", "parquet"),
                   help="input format (default: from the file suffix; txt for stdin)")
    p.add_argument("--text-field", default="text", help="field holding the text (default text)")
    p.add_argument("--title-field", help="field prepended to the text with a space (BEIR: title)")
    p.add_argument("--id-field", help="field holding the row id (default: the row's 1-based position)")
    p.add_argument("--keep", nargs="+", default=[], metavar="FIELD", help="fields copied to the output (strings)")
    p.add_argument("--kind", choices=C.CORPUS_KINDS, default="passage",
                   help=f"e5 prefix added to each text (default passage: {C.PASSAGE_PREFIX!r}; none: as given)")
    p.add_argument("--variant", default=C.DEFAULT_VARIANT, choices=_VARIANT_CHOICES,
                   help=f"default {C.DEFAULT_VARIANT}")
    p.add_argument("--threads", type=_THREADS,
                   help="inference threads (default: the CPUs this process may use; with --ray, per actor: the "
                        "CPUs Ray gives it)")
    p.add_argument("--shard-rows", type=whole(1), default=C.CORPUS_SHARD_ROWS,
                   help=f"input rows per Parquet shard, the unit a resume restarts from (default {C.CORPUS_SHARD_ROWS})")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue a killed run of the same job after its last complete shard")
    again.add_argument("--force", action="store_true", help="start afresh; replace OUT once the new one is complete")
    p.add_argument("--on-error", choices=C.CORPUS_ON_ERROR, default="fail",
                   help="bad rows: fail (default; nothing is written) or skip (listed in OUT/_rejects.jsonl)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run on Ray (ray extra): a local Ray without ADDRESS, else the cluster at ADDRESS")
    return p


def _add_serve(sub):
    p = sub.add_parser("serve", help="HTTP server: OpenAI /v1/embeddings and TEI /embed, dynamic batching (server extra)",
                       description=f"Every flag can also be set by {C.SERVER_ENV_PREFIX}<FLAG> (e.g. "
                                   f"{C.SERVER_ENV_PREFIX}PORT=9000); a flag wins.")
    p.add_argument("model", nargs="?", help=f"model folder or Hub repo id (or {C.SERVER_ENV_PREFIX}MODEL)")
    p.add_argument("--host", help=f"address to bind (default {C.SERVER_HOST}: loopback only)")
    p.add_argument("--port", type=whole(0, 65535), help=f"TCP port (default {C.SERVER_PORT})")
    p.add_argument("--variant", choices=_VARIANT_CHOICES, help=f"default {C.DEFAULT_VARIANT}")
    p.add_argument("--threads", type=_THREADS, help="inference threads (default: the CPUs this process may use)")
    p.add_argument("--revision", help="Hub branch, tag or commit")
    p.add_argument("--max-batch-tokens", type=whole(1),
                   help=f"real tokens merged into one inference call (default {C.SERVER_MAX_BATCH_TOKENS})")
    p.add_argument("--max-client-batch-size", type=whole(1),
                   help=f"texts per request (default {C.SERVER_MAX_CLIENT_BATCH_SIZE})")
    p.add_argument("--max-queue", type=whole(1), help=f"requests admitted before 429 (default {C.SERVER_MAX_QUEUE})")
    p.add_argument("--max-body-bytes", type=whole(1),
                   help=f"largest request body in bytes (default {_bytes(C.SERVER_MAX_BODY_BYTES)}; 413 beyond)")
    p.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' on every route but /health")
    p.add_argument("--cors-origins", help="comma-separated origins allowed by CORS (default: CORS off)")
    p.add_argument("--graceful-timeout-s", type=whole(1),
                   help=f"seconds in-flight requests get on SIGTERM (default {C.SERVER_GRACEFUL_TIMEOUT_S})")
    p.add_argument("--body-timeout-s", type=whole(1),
                   help=f"seconds a request body may take to arrive (default {C.SERVER_BODY_TIMEOUT_S}; 408 beyond)")
    p.add_argument("--cache-entries", type=whole(0), metavar="N",
                   help="keep the last N vectors computed and answer a repeated text from them (LRU; up to N x dim "
                        f"x 4 bytes; default {C.SERVER_CACHE_ENTRIES}: no cache)")
    return p


def _bytes(n):
    """``8388608`` -> ``"8 MiB"`` (whole MiB / KiB), else the byte count."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % size == 0:
            return f"{n // size} {unit}"
    return str(n)


def _add_tolerances(p, default=_DEFAULT_TOL):
    g = p.add_argument_group("parity tolerances on normalised embeddings"
                             + ("" if default else " (default: those recorded in the manifest)"))
    d = default or _DEFAULT_TOL
    max_abs, cosine = tolerance("max_abs"), tolerance("cosine")
    g.add_argument("--fp32-max-abs", type=max_abs, default=default and default.fp32_max_abs,
                   help=f"largest |Δ| for fp32 (built-in default {d.fp32_max_abs:g})")
    g.add_argument("--optimized-max-abs", type=max_abs, default=default and default.optimized_max_abs,
                   help=f"largest |Δ| for the optimized graph ({d.optimized_max_abs:g}; O3's GELU approximation "
                        "needs about 1e-3)")
    g.add_argument("--int8-mean-cosine", type=cosine, default=default and default.int8_mean_cosine,
                   help=f"smallest mean cosine for int8 ({d.int8_mean_cosine:g})")
    g.add_argument("--int8-min-cosine", type=cosine, default=default and default.int8_min_cosine,
                   help=f"smallest per-text cosine for int8 ({d.int8_min_cosine:g})")
    g.add_argument("--int8-batch-cosine", type=cosine, default=default and default.int8_batch_cosine,
                   help=f"smallest cosine of a text alone vs in a batch of {C.INT8_INVARIANCE_BATCH}, int8 "
                        f"({d.int8_batch_cosine:g})")
    g.add_argument("--bf16-min-cosine", type=cosine, default=default and default.bf16_min_cosine,
                   help=f"smallest per-text cosine for bf16 ({d.bf16_min_cosine:g})")
