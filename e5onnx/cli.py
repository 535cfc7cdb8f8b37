"""The ``e5onnx`` command line: ``export``, ``verify``, ``info``, ``embed``, ``bench``, ``serve``.

``export`` and ``verify`` need the ``export`` extra (torch); ``info``, ``embed`` and ``serve`` are torch-free.
Exit codes: 0 success, 1 a failed check or error (message on stderr), 2 bad command-line usage, 3 ``serve``
could not start listening (address in use, bad host).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL_ID,
    DEFAULT_OPSET,
    MAX_LENGTH,
    OPTIMIZATION_LEVELS,
    VARIANTS,
    ParityTolerances,
)
from .errors import E5OnnxError, InvalidInputError
from .runtime.texts import read_texts

_DEFAULT_TOL = ParityTolerances()


def _build_parser():
    parser = argparse.ArgumentParser(prog="e5onnx", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"e5onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export a Hugging Face model to a verified ONNX model folder (needs torch)")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL_ID,
                   help=f"Hub id or local Hugging Face folder (default {DEFAULT_MODEL_ID})")
    p.add_argument("--output", "-o", required=True, help="model folder to create")
    p.add_argument("--quantize", choices=["int8"],
                   help="also write model_int8.onnx (SmoothQuant + per-token INT8, must pass the INT8 quality gate)")
    p.add_argument("--calibration", metavar="FILE",
                   help="texts to calibrate and validate INT8 on (one per line or .jsonl; default: built-in set)")
    p.add_argument("--optimize", choices=OPTIMIZATION_LEVELS, help="also write model_optimized.onnx (ORT fusions)")
    p.add_argument("--bf16", action="store_true",
                   help="also record the bf16 variant (OpenVINO runs model.onnx in bfloat16; needs e5onnx[openvino])")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--revision", help="Hub branch, tag or commit")
    p.add_argument("--max-length", type=int,
                   help=f"tokens per text (default: the model's sentence-transformers max_seq_length, else {MAX_LENGTH})")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads for the parity check")
    _add_tolerances(p)

    p = sub.add_parser("verify", help="re-run the parity check of a model folder against PyTorch (needs torch)")
    p.add_argument("folder")
    p.add_argument("--source", help="Hugging Face model to compare with (default: the manifest's source)")
    p.add_argument("--threads", type=int)
    _add_tolerances(p, default=None)

    p = sub.add_parser("bench", help="side-by-side speed vs the PyTorch reference and fastembed (bench extra)")
    p.add_argument("folder", help="exported model folder")
    p.add_argument("--out", required=True, help="folder for results.json and results.md")
    p.add_argument("--source", help="Hugging Face folder for the PyTorch reference (default: the manifest's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--passages", type=int, default=500)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="tiny workload: only checks that the harness runs")
    p.add_argument("--skip", action="append", default=[], choices=["torch", "fastembed", "st"],
                   help="leave a contender out (st: sentence-transformers, ONNX fp32 and int8)")
    p.add_argument("--no-quality", action="store_true", help="skip STS-B and SciFact (random-weight models)")
    p.add_argument("--no-scifact", action="store_true", help="skip SciFact nDCG@10 (~5 min per variant)")
    p.add_argument("--label", help="title of the tables and plot")

    p = sub.add_parser("info", help="print a model folder's manifest summary as JSON")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("--full", action="store_true", help="print the whole manifest")

    p = sub.add_parser("embed", help="embed texts; JSON lines on stdout, or --output X.npy")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --input)")
    p.add_argument("--input", "-i", metavar="FILE",
                   help="UTF-8 file, one text per line, empty lines kept ('-' for stdin); *.jsonl or --jsonl: "
                        "one JSON object with a 'text' field (or a JSON string) per line")
    p.add_argument("--jsonl", action="store_true", help="read --input as JSON lines whatever its name")
    p.add_argument("--output", "-o", metavar="X.npy", help="write an (n, dim) float32 .npy instead of JSON lines")
    p.add_argument("--variant", default="auto", choices=[*VARIANTS, "auto"])
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--query", action="store_true", help="add 'query: ' once to each text")
    kind.add_argument("--passage", action="store_true", help="add 'passage: ' once to each text")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-truncate", action="store_true", help="refuse texts over max length instead of cutting")

    p = sub.add_parser("serve", help="HTTP server: OpenAI /v1/embeddings and TEI /embed, dynamic batching (server extra)",
                       description="Every flag can also be set by E5ONNX_<FLAG> (e.g. E5ONNX_PORT=9000); a flag wins.")
    p.add_argument("model", nargs="?", help="model folder or Hub repo id (or E5ONNX_MODEL)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--variant", choices=[*VARIANTS, "auto"], help="default auto")
    p.add_argument("--threads", type=int, help="inference threads (default: the CPUs this process may use)")
    p.add_argument("--revision", help="Hub branch, tag or commit")
    p.add_argument("--max-batch-tokens", type=int, help="real tokens merged into one inference call (default 16384)")
    p.add_argument("--max-client-batch-size", type=int, help="texts per request (default 256)")
    p.add_argument("--max-queue", type=int, help="requests admitted before 429 (default 512)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 8 MiB; 413 beyond)")
    p.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' on every route but /health")
    p.add_argument("--cors-origins", help="comma-separated origins allowed by CORS (default: CORS off)")
    p.add_argument("--graceful-timeout-s", type=int, help="seconds in-flight requests get on SIGTERM (default 30)")
    p.add_argument("--body-timeout-s", type=int, help="seconds a request body may take to arrive (default 30; 408 beyond)")
    return parser


def _add_tolerances(p, default=_DEFAULT_TOL):
    g = p.add_argument_group("parity tolerances on normalised embeddings"
                             + ("" if default else " (default: those recorded in the manifest)"))
    d = default or _DEFAULT_TOL
    g.add_argument("--fp32-max-abs", type=float, default=default and default.fp32_max_abs,
                   help=f"largest |Δ| for fp32 (built-in default {d.fp32_max_abs:g})")
    g.add_argument("--optimized-max-abs", type=float, default=default and default.optimized_max_abs,
                   help=f"largest |Δ| for the optimized graph ({d.optimized_max_abs:g}; O3's GELU approximation "
                        "needs about 1e-3)")
    g.add_argument("--int8-mean-cosine", type=float, default=default and default.int8_mean_cosine,
                   help=f"smallest mean cosine for int8 ({d.int8_mean_cosine:g})")
    g.add_argument("--int8-min-cosine", type=float, default=default and default.int8_min_cosine,
                   help=f"smallest per-text cosine for int8 ({d.int8_min_cosine:g})")
    g.add_argument("--int8-batch-cosine", type=float, default=default and default.int8_batch_cosine,
                   help=f"smallest cosine of a text alone vs in a batch of 32, int8 ({d.int8_batch_cosine:g})")
    g.add_argument("--bf16-min-cosine", type=float, default=default and default.bf16_min_cosine,
                   help=f"smallest per-text cosine for bf16 ({d.bf16_min_cosine:g})")


def _tolerances(args, base):
    return ParityTolerances(**{
        k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.as_dict().items()
    })


def _cmd_export(args):
    from .export import export_model

    manifest = export_model(args.model, args.output, quantize=args.quantize, optimize=args.optimize,
                            opset=args.opset, revision=args.revision, max_length=args.max_length,
                            force=args.force, tolerances=_tolerances(args, _DEFAULT_TOL), threads=args.threads,
                            calibration=args.calibration, bf16=args.bf16)
    print(json.dumps(_summary(manifest), indent=2))
    return 0


def _cmd_verify(args):
    from .export import verify_folder
    from .export.parity import format_report

    overrides = {k: getattr(args, k) for k in _DEFAULT_TOL.as_dict() if getattr(args, k) is not None}
    report = verify_folder(args.folder, source=args.source, threads=args.threads, overrides=overrides)
    print("\n".join(format_report(report)))
    return 0


def _summary(manifest):
    from .runtime.embedder import variant_file

    return {
        "source": manifest.get("source", {}),
        "embedding_dim": manifest["embedding_dim"],
        "max_length": manifest["max_length"],
        "pooling": manifest.get("pooling"),
        "normalization": manifest.get("normalization"),
        "prefixes": manifest.get("prefixes"),
        "opset": manifest.get("opset"),
        "variants": {
            name: {
                "file": variant_file(manifest, name),
                "size_bytes": manifest["files"].get(variant_file(manifest, name), {}).get("size"),
                "parity_passed": v.get("parity", {}).get("passed"),
                "max_abs_diff": v.get("parity", {}).get("max_abs_diff"),
                "min_cosine": v.get("parity", {}).get("min_cosine"),
                "mean_cosine": v.get("parity", {}).get("mean_cosine"),
            }
            for name, v in manifest["variants"].items()
        },
        "created_at": manifest.get("created_at"),
    }


def _cmd_info(args):
    from .runtime.folder import fetch_model_folder

    _, manifest = fetch_model_folder(args.folder, lambda m: [])
    print(json.dumps(manifest if args.full else _summary(manifest), indent=2, ensure_ascii=False))
    return 0


def _npy_target(path):
    """The real file ``--output`` writes: symlinks followed; must be a ``.npy`` name and a regular file."""
    if not path.lower().endswith(".npy"):
        raise InvalidInputError(f"--output {path!r} must be a .npy file name")
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_file():
        raise InvalidInputError(f"--output {path!r} exists and is not a regular file")
    return real


def _cmd_embed(args):
    from .runtime.embedder import Embedder

    output = _npy_target(args.output) if args.output is not None else None
    texts = read_texts(args.input, args.jsonl) if args.input is not None else list(args.texts)
    embedder = Embedder.load(args.folder, variant=args.variant, threads=args.threads)
    embed = embedder.embed_queries if args.query else embedder.embed_passages if args.passage else embedder.embed
    try:
        vectors = embed(texts, args.batch_size, truncate=not args.no_truncate)
    except InvalidInputError as exc:
        if exc.index is None or args.input is None:
            raise
        name = "<stdin>" if args.input == "-" else args.input
        raise InvalidInputError(f"{exc} (line {exc.index + 1} of {name})", exc.index) from None
    if output is not None:
        from .runtime.manifest import write_npy_atomic

        try:
            write_npy_atomic(output, vectors)
        except OSError as exc:
            raise InvalidInputError(f"cannot write --output {args.output!r}: {exc.strerror or exc}") from None
        print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 to {args.output}", file=sys.stderr)
    else:
        out = sys.stdout
        for i, row in enumerate(vectors):
            out.write(json.dumps({"index": i, "embedding": row.tolist()}) + "\n")
    return 0


def _cmd_bench(args):
    from .bench.run import markdown, run

    result = run(args.folder, args.out, source=args.source, threads=args.threads, repeats=args.repeats,
                 passages=args.passages, queries=args.queries, quick=args.quick, skip=args.skip,
                 quality=not args.no_quality, scifact=not args.no_scifact, label=args.label)
    print(markdown(result))
    return 0


def _cmd_serve(args):
    from .server.settings import ServerSettings, settings_from

    try:
        from .server.main import serve
    except ModuleNotFoundError as exc:
        print(f"error: `e5onnx serve` needs the server extra ({exc.name} is not installed): "
              "pip install 'e5onnx[server]'", file=sys.stderr)
        return 1
    names = [f for f in ServerSettings.__dataclass_fields__]
    return serve(settings_from({n: getattr(args, n, None) for n in names}))


_COMMANDS = {"export": _cmd_export, "verify": _cmd_verify, "info": _cmd_info, "embed": _cmd_embed,
             "bench": _cmd_bench, "serve": _cmd_serve}


def main(argv=None):
    """Entry point of the ``e5onnx`` console script. Returns the exit code."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "embed" and not any(x.startswith("-") for x in extra):
        args.texts = list(args.texts) + extra  # texts after an option: argparse stops at the first one
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "embed" and args.input is None and not args.texts:
        parser.error("embed needs TEXT arguments or --input FILE ('-' for stdin)")
    if args.command == "embed" and args.input is not None and args.texts:
        parser.error("give texts as arguments or with --input, not both")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("e5onnx").setLevel(logging.INFO)
    try:
        return _COMMANDS[args.command](args)
    except E5OnnxError as exc:  # ParityError included: its message carries the full report
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if args.command == "bench" and exc.name in ("fastembed", "scipy", "matplotlib", "psutil", "torch",
                                                    "transformers", "optimum", "onnx"):
            print(f"error: `e5onnx bench` needs the bench extra ({exc.name} is not installed): "
                  "pip install 'e5onnx[bench]'", file=sys.stderr)
            return 1
        if exc.name in ("torch", "transformers", "optimum", "onnx"):
            print(f"error: `e5onnx {args.command}` needs the export extra ({exc.name} is not installed): "
                  "pip install 'e5onnx[export]'", file=sys.stderr)
            return 1
        raise
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
