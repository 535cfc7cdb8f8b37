"""The e5 family at the published models' exact configurations: what an export costs and how close each variant is.

    python benchmarks/family.py --out benchmarks/results/family                  # every model of the family
    python benchmarks/family.py --out DIR --models e5-large-v2 --layers 2        # one model, fewer layers

For each model (tests/family_models.py: random weights, seed 0, the exact ``config.json`` of e5-small-v2,
e5-base-v2, e5-large-v2, multilingual-e5-small and multilingual-e5-base, uncased WordPiece or a locally trained
XLM-RoBERTa-style Unigram tokenizer), a fresh subprocess runs ``export_model(..., optimize="O2",
quantize="int8", bf16=True)`` with the built-in calibration set and the default tolerances, and records: the
wall time of each export phase (from the export's own log lines) and in all, the process's peak RSS, each
variant's parity figures against the PyTorch recipe (battery of 19 texts: max |Δ|, min / mean cosine), the INT8
gate's figures (120 held-out validation texts, batch invariance), file sizes, and on tests/family_models.py's
multilingual list whether the runtime's token ids equal the HF fast tokenizer's and the fp32 max |Δ|.
Results: ``OUT/results.json`` and ``OUT/results.md`` (the README's ``family`` table is generated from them by
benchmarks/readme_tables.py). Needs the export extra, OpenVINO, and ../shared for the WordPiece tokenizer.
"""

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))
from family_models import (  # noqa: E402 - after the path is set
    CONFIGS, MULTILINGUAL, MULTILINGUAL_TEXTS, build_family_model, build_xlmr_tokenizer)

from e5onnx.config import shared_dir  # noqa: E402
from e5onnx.runtime.atomic import write_json_atomic, write_text_atomic  # noqa: E402

#: Export log lines that start each phase (e5onnx.export's INFO messages).
PHASES = (("exporting", "fp32 export"), ("optimising", "O2 fusions"), ("quantising", "int8 build + gate"),
          ("parity check", "parity (4 variants)"), ("wrote", None))


class _Phases(logging.Handler):
    def __init__(self):
        super().__init__()
        self.marks = []

    def emit(self, record):
        message = record.getMessage()
        for start, name in PHASES:
            if message.startswith(start):
                self.marks.append((name, time.perf_counter()))


def one(name, layers, work):
    """Build and export one model in this process; return its record."""
    from e5onnx.export import export_model
    from e5onnx.export.reference import TorchReference
    from e5onnx.runtime import Embedder

    src, out = Path(work) / "src", Path(work) / "out"
    load = os.getloadavg()[0]  # the machine may be shared: times are wall times
    started = time.perf_counter()
    tokenizer = shared_dir() / "models" / "all-MiniLM-L6-v2"
    if name in MULTILINGUAL:
        tokenizer = Path(work) / "tokenizer"
        build_xlmr_tokenizer(tokenizer)
    config = build_family_model(src, name, tokenizer, layers)
    built = time.perf_counter()
    phases = _Phases()
    logging.getLogger("e5onnx.export").addHandler(phases)
    logging.getLogger("e5onnx.export").setLevel(logging.INFO)
    manifest = export_model(str(src), out, optimize="O2", quantize="int8", bf16=True)
    done = time.perf_counter()
    marks = phases.marks
    timing = {a: round(t2 - t1, 1) for (a, t1), (_, t2) in zip(marks, marks[1:])}
    reference = TorchReference(src, manifest.max_length)
    fp32 = Embedder.load(out, variant="fp32")
    got, want = fp32.embed(MULTILINGUAL_TEXTS), reference.embed(MULTILINGUAL_TEXTS)
    q = manifest.variants["int8"].quantization
    return {
        "model": name, "config": config, "exact": layers is None or layers == CONFIGS[name]["num_hidden_layers"],
        "max_length": manifest.max_length, "pad_token_id": manifest.pad_token_id, "embedding_dim": manifest.embedding_dim,
        "graph_inputs": sorted(fp32.encoder.inputs), "build_s": round(built - started, 1),
        "export_s": round(done - built, 1), "phases_s": timing, "load_average_at_start": round(load, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parity": {v: {k: e.parity[k] for k in ("max_abs_diff", "min_cosine", "mean_cosine", "token_ids_equal")}
                   for v, e in manifest.variants.items()},
        "bf16_precision": manifest.variants["bf16"].extra.get("precision_effective"),
        "int8_gate": {k: q["gate"][k] for k in ("texts", "mean_cosine", "min_cosine", "batch_invariance_min_cosine")},
        "int8_kept_fp32": len(q["matmuls_kept_fp32"]), "int8_weight_form": q["weight_form"],
        "int8_word_table": q.get("word_embedding"),
        "multilingual": {"texts": len(MULTILINGUAL_TEXTS),
                         "token_ids_equal": fp32.tokenize(MULTILINGUAL_TEXTS) == reference.token_ids(MULTILINGUAL_TEXTS),
                         "fp32_max_abs_diff": float(abs(got.astype("float64") - want).max())},
        "file_mb": {f: round(r.size / 1e6, 1) for f, r in manifest.files.items() if f.endswith(".onnx")},
    }


def markdown(results):
    """The results as the README's table (also written to results.md)."""
    env = results["environment"]
    loads = [r["load_average_at_start"] for r in results["models"] if "load_average_at_start" in r]
    busy = f"; 1-minute load average {min(loads):.0f}–{max(loads):.0f} at the exports' starts" if loads else ""
    lines = [f"Random weights (seed 0), published configs; one `benchmarks/family.py` run ({env['cpu']['model']}, "
             f"{env['threads']} threads, onnxruntime {env['versions'].get('onnxruntime')}, OpenVINO "
             f"{(env['versions'].get('openvino') or '—').split('-')[0]}, {env['date'][:10]}{busy}). fp32 / optimized: "
             "max |Δ| to the PyTorch recipe on the 19-text parity battery (gate 1e-5); int8 gate: mean / min cosine "
             "to fp32 on 120 held-out texts (gate 0.999 / 0.995); bf16: min cosine on the battery (gate 0.999). "
             "Export: wall seconds with every variant (of which the INT8 build and gate), peak RSS of the process:",
             "", "| model | layers × width, vocab | max tokens, pad id, graph inputs | fp32 max \\|Δ\\| | optimized "
             "max \\|Δ\\| | int8 gate mean / min cos | bf16 min cos | export s (int8) | peak RSS GB | "
             "model.onnx / int8 MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        c, p, g = r["config"], r["parity"], r["int8_gate"]
        layers = f"{c['num_hidden_layers']}" + ("" if r["exact"] else
                                                 f" (of {CONFIGS[r['model']]['num_hidden_layers']})")
        inputs = "ids, mask, token types" if "token_type_ids" in r["graph_inputs"] else "ids, mask"
        lines.append(
            f"| {r['model']} ({c['model_type']}) | {layers} × {c['hidden_size']}, {c['vocab_size']:,} | "
            f"{r['max_length']}, {r['pad_token_id']}, {inputs} | {p['fp32']['max_abs_diff']:.1e} | "
            f"{p['optimized']['max_abs_diff']:.1e} | {g['mean_cosine']:.6f} / {g['min_cosine']:.6f} | "
            f"{p['bf16']['min_cosine']:.6f} | {r['export_s']:.0f} ({r['phases_s'].get('int8 build + gate', 0):.0f}) | "
            f"{r['peak_rss_mb'] / 1024:.1f} | {r['file_mb']['model.onnx']:.0f} / {r['file_mb']['model_int8.onnx']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="results folder (results.json, results.md)")
    p.add_argument("--models", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--layers", type=int, help="num_hidden_layers instead of the published (all shapes unchanged)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model in this process, print its record
    args = p.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="e5onnx-family-") as work:
            print(json.dumps(one(args.one, args.layers, work)))
        return 0
    from e5onnx.bench.run import environment
    from e5onnx.runtime.session import default_threads

    out = Path(args.out)
    path = out / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"models": []}
    for name in args.models.split(","):
        extra = ["--layers", str(args.layers)] if args.layers else []
        print(f"{name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--out", str(out), "--one", name, *extra], check=True,
                              stdout=subprocess.PIPE, text=True)
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        results["models"] = [r for r in results["models"] if r["model"] != name] + [record]
        results["models"].sort(key=lambda r: list(CONFIGS).index(r["model"]))
        results["environment"] = environment(default_threads())
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, results)  # after each model: a long run keeps what it measured
        write_text_atomic(out / "results.md", markdown(results))
        print(f"{name}: export {record['export_s']} s, peak RSS {record['peak_rss_mb']} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
