"""The ``e5onnx`` command line: ``export``, ``verify``, ``info``, ``embed``, ``corpus``, ``bench``, ``serve``.

``export`` and ``verify`` need the ``export`` extra (torch); ``info``, ``embed`` and ``serve`` are torch-free.
Exit codes: 0 success, 1 a failed check or error (message on stderr), 2 bad command-line usage (an unknown flag,
a value of the wrong type or out of range, a bad ``E5ONNX_<FLAG>`` of ``serve``), 3 ``serve`` could not start
listening (address in use, bad host). The flags are defined in :mod:`e5onnx.cli_parser`.
"""

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .cli_parser import build_parser
from .config import OUTPUT_FORMS, ParityTolerances
from .errors import E5OnnxError, InvalidInputError
from .textfile import read_numbered_texts

_DEFAULT_TOL = ParityTolerances()


def _tolerances(args, base):
    return ParityTolerances(**{
        k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.as_dict().items()
    })


def _cmd_export(args):
    from .export import export_model

    manifest = export_model(args.model, args.output, quantize=args.quantize, optimize=args.optimize,
                            opset=args.opset, revision=args.revision, max_length=args.max_length,
                            force=args.force, tolerances=_tolerances(args, _DEFAULT_TOL), threads=args.threads,
                            calibration=args.calibration, bf16=args.bf16, fallback=args.fallback)
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
    """What ``e5onnx info`` prints: the model type, the recipe, which variant ``auto`` picks here and why not the
    others, each variant's file, size (bytes), parity figures and (int8) gate and weight form, and the output
    vector forms the folder can give (int8 / uint8 only with recorded ranges)."""
    reasons = dict(manifest.usable_variants())
    variants = {}
    for name, v in manifest.variants.items():
        entry = {"file": v.file, "size_bytes": manifest.files[v.file].size if v.file in manifest.files else None,
                 "parity_passed": v.parity_passed, "max_abs_diff": v.parity.get("max_abs_diff"),
                 "min_cosine": v.parity.get("min_cosine"), "mean_cosine": v.parity.get("mean_cosine"),
                 "auto_may_use": reasons.get(name) is None, "auto_skips_because": reasons.get(name)}
        if v.quantization is not None:
            gate = v.gate
            entry["int8_gate"] = {"passed": gate.get("passed"), "cpu_kind": v.gated_cpu_kind,
                                  **{k: gate.get(k) for k in ("mean_cosine", "min_cosine", "batch_invariance_min_cosine")}}
            entry["weight_form"] = v.quantization.get("weight_form")
        variants[name] = entry
    src = manifest.source
    return {
        "source": {"id": src.id, "revision": src.revision, "path": src.path},
        "model_type": (manifest.record.get("architecture") or {}).get("model_type"),
        "embedding_dim": manifest.embedding_dim, "max_length": manifest.max_length, "pad_token_id": manifest.pad_token_id,
        "pooling": manifest.record.get("pooling"), "normalization": manifest.record.get("normalization"),
        "prefixes": manifest.prefixes, "opset": manifest.record.get("opset"),
        "auto_variant": manifest.choose_variant("auto"), "variants": variants,
        "output_forms": [f for f in OUTPUT_FORMS if manifest.embedding_ranges or f not in ("int8", "uint8")],
        "created_at": manifest.record.get("created_at"),
    }


def _cmd_info(args):
    from .runtime.folder import fetch_model_folder

    _, manifest = fetch_model_folder(args.folder, lambda m: [])
    print(json.dumps(manifest.to_dict() if args.full else _summary(manifest), indent=2, ensure_ascii=False))
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
    if args.input is not None:
        texts, lines = read_numbered_texts(args.input, args.jsonl)
    else:
        texts, lines = list(args.texts), None
    embedder = Embedder.load(args.folder, variant=args.variant, threads=args.threads)
    embed = embedder.embed_queries if args.query else embedder.embed_passages if args.passage else embedder.embed
    try:
        truncate = "windows" if args.windows else not args.no_truncate
        vectors = embed(texts, args.batch_size, truncate=truncate, output=args.vectors)
    except InvalidInputError as exc:
        if exc.index is None or lines is None:
            raise
        name = "<stdin>" if args.input == "-" else args.input
        raise InvalidInputError(f"{exc} (line {lines[exc.index]} of {name})", exc.index) from None
    if output is not None:
        from .runtime.atomic import write_npy_atomic

        try:
            write_npy_atomic(output, vectors)
        except OSError as exc:
            raise InvalidInputError(f"cannot write --output {args.output!r}: {exc.strerror or exc}") from None
        print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} {vectors.dtype} to {args.output}", file=sys.stderr)
    else:
        out = sys.stdout
        for i, row in enumerate(vectors):
            out.write(json.dumps({"index": i, "embedding": row.tolist()}) + "\n")
    return 0


def _cmd_corpus(args):
    try:
        import pyarrow  # noqa: F401 - the output format; imported where used

        from .corpus.job import embed_corpus
    except ModuleNotFoundError as exc:
        print(f"error: `e5onnx corpus` needs the corpus extra ({exc.name} is not installed): "
              "pip install 'e5onnx[corpus]'", file=sys.stderr)
        return 1
    with _sigterm_as_interrupt():  # a SIGTERM stops the job as Ctrl-C does: shards kept, Ray shut down
        embed_corpus(args.folder, args.input, args.output, variant=args.variant, threads=args.threads,
                     fmt=args.fmt, text_field=args.text_field, title_field=args.title_field, id_field=args.id_field,
                     keep=tuple(args.keep), kind=args.kind, shard_rows=args.shard_rows, resume=args.resume,
                     force=args.force, on_error=args.on_error, quiet=args.quiet, ray=args.ray)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt; :func:`main` exits 143 (128 + 15)."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    def handler(signum, frame):
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_bench(args):
    from .bench.run import markdown, run

    result = run(args.folder, args.out, source=args.source, threads=args.threads, repeats=args.repeats,
                 passages=args.passages, queries=args.queries, quick=args.quick, skip=args.skip,
                 quality=not args.no_quality, scifact=not args.no_scifact, label=args.label)
    print(markdown(result))
    return 0


def _cmd_serve(args):
    from .server.settings import ServerSettings, settings_from

    try:  # flags were checked while parsing; an E5ONNX_<FLAG> variable's value (or no model) is checked here
        settings = settings_from({n: getattr(args, n, None) for n in ServerSettings.__dataclass_fields__})
    except InvalidInputError as exc:
        args.subparser.error(str(exc))  # a usage error: exit status 2 with serve's usage
    try:
        from .server.main import serve
    except ModuleNotFoundError as exc:
        print(f"error: `e5onnx serve` needs the server extra ({exc.name} is not installed): "
              "pip install 'e5onnx[server]'", file=sys.stderr)
        return 1
    return serve(settings)


_COMMANDS = {"export": _cmd_export, "verify": _cmd_verify, "info": _cmd_info, "embed": _cmd_embed,
             "corpus": _cmd_corpus, "bench": _cmd_bench, "serve": _cmd_serve}


def main(argv=None):
    """Entry point of the ``e5onnx`` console script. Returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "embed" and not any(x.startswith("-") for x in extra):
        args.texts = list(args.texts) + extra  # texts after an option: argparse stops at the first one
    elif extra:
        args.subparser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "embed" and args.input is None and not args.texts:
        args.subparser.error("embed needs TEXT arguments or --input FILE ('-' for stdin)")
    if args.command == "embed" and args.input is not None and args.texts:
        args.subparser.error("give texts as arguments or with --input, not both")
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
    except KeyboardInterrupt as exc:
        print("interrupted" + (" (SIGTERM)" if isinstance(exc, Terminated) else ""), file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
