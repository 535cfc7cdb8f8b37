"""``e5onnx bench``: every contender side by side in one process run (issue 3, first part: speed + agreement).

Contenders: the PyTorch reference (transformers fp32), fastembed on the same ``model.onnx``, and each
e5onnx variant in the model folder, all with the same thread count. Writes ``results.json`` and
``results.md`` (with the environment) to ``--out``. ``--quick`` only checks that the harness runs.
"""

from datetime import datetime, timezone
from pathlib import Path

from ..config import VARIANT_FILES, VARIANTS
from ..environment import describe
from ..runtime.manifest import read_manifest, write_json_atomic
from . import contenders as C
from .probe import cold_start_and_rss
from .quality import scifact_ndcg10, stsb_per_contender
from .report import plot, targets
from .speed import agreement, measure_passages, measure_queries

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SCIFACT = SHARED_DATA / "scifact"
STSB = SHARED_DATA / "stsb" / "sts-test.tsv"


def workload(n_passages, n_queries, folder=SCIFACT):
    """SciFact passages (``passage: `` + title + text, the first n) and queries (``query: ``), else synthetic."""
    if (folder / "queries.test.jsonl").is_file():
        from .quality import read_scifact

        _, docs, _, queries, _ = read_scifact(folder)
        return (["passage: " + d for d in docs[:n_passages]], ["query: " + q for q in queries[:n_queries]],
                "SciFact test (BEIR)")
    words = "the cell membrane regulates transport of ions and small molecules across the lipid bilayer".split()
    passages = ["passage: " + " ".join(words[j % len(words)] for j in range(5 + (i * 37) % 300))
                for i in range(n_passages)]
    return passages, [f"query: what regulates ion transport {i}" for i in range(n_queries)], "synthetic"


def environment(threads):
    """The machine and library versions of a benchmark run, with its thread count and date."""
    names = ("e5onnx", "onnxruntime", "openvino", "torch", "transformers", "fastembed", "tokenizers", "numpy")
    return {**describe(names), "threads": threads, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def model_size_mb(spec, manifest):
    """Size of the weights file a contender loads, MB (10^6 bytes)."""
    if spec["kind"] == "torch":
        weights = manifest.get("source", {}).get("weights", {})
        return sum(w["size"] for w in weights.values()) / 1e6 if weights else None
    name = VARIANT_FILES.get(spec.get("variant", "fp32"))
    return manifest["files"][name]["size"] / 1e6


def markdown(result):
    env = result["environment"]
    lines = [f"# e5onnx benchmark — {result['model']}", "",
             f"CPU: {env['cpu']['model']} ({', '.join(env['cpu']['flags'])}); threads {env['threads']}; "
             f"workload: {result['workload']}; repeats {result['repeats']} (medians); {env['date']}", "",
             "## Passages: tokens/s by batch size", ""]
    sizes = list(next(iter(result["passages"].values())))
    lines.append("| contender | " + " | ".join(f"batch {b}" for b in sizes) + " |")
    lines.append("|---" * (len(sizes) + 1) + "|")
    for name, per_b in result["passages"].items():
        lines.append(f"| {name} | " + " | ".join(f"{per_b[b]['tokens_per_s']:.0f}" for b in sizes) + " |")
    lines += ["", "## Single query latency, agreement with the PyTorch reference, cold start, memory", "",
              "| contender | p50 ms | p95 ms | p99 ms | mean cos | min cos | max abs diff | cold start s | "
              "peak RSS MB | model MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, q in result["queries"].items():
        a, p = result["agreement"].get(name, {}), result["process"].get(name, {})
        size = f"{p['model_mb']:.1f}" if p.get("model_mb") is not None else "-"
        lines.append(f"| {name} | {q['p50_ms']:.2f} | {q['p95_ms']:.2f} | {q['p99_ms']:.2f} | "
                     f"{a.get('mean_cosine', float('nan')):.6f} | {a.get('min_cosine', float('nan')):.6f} | "
                     f"{a.get('max_abs_diff', float('nan')):.2e} | {p.get('cold_start_s', float('nan')):.2f} | "
                     f"{p.get('peak_rss_mb', float('nan')):.0f} | {size} |")
    if result.get("scifact"):
        lines += ["", "## SciFact test nDCG@10 x100 (full corpus, 300 queries, no prefixes as MTEB scores MiniLM)", "",
                  "| contender | nDCG@10 | seconds |", "|---|---|---|"]
        for name, r in result["scifact"].items():
            lines.append(f"| {name} | {r['ndcg_at_10']:.2f} | {r['seconds']:.0f} |")
    rows = targets(result)
    if rows:
        lines += ["", "## Issue 3 targets (ratios to fastembed-fp32 from this run)", "",
                  "| target | contender | value | limit | met |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['target']} | {r['contender']} | {r['value']:.2f} | {r['limit']:g} | "
                         f"{'yes' if r['met'] else 'NO'} |")
    if result.get("quality"):
        q0 = next(iter(result["quality"].values()))
        lines += ["", f"## Quality on STS-B test ({q0['sentences']} sentences, batch 32)", "",
                  "| contender | Spearman x100 | mean cos to torch | min cos to torch |", "|---|---|---|---|"]
        for name, q in result["quality"].items():
            lines.append(f"| {name} | {q['stsb_spearman']:.2f} | {q['mean_cosine_to_reference']:.6f} | "
                         f"{q['min_cosine_to_reference']:.6f} |")
    return "\n".join(lines) + "\n"


def run(model_dir, out, source=None, threads=2, repeats=5, passages=500, queries=100,
        batch_sizes=(1, 8, 32, 128), quick=False, skip=(), quality=True, scifact=True, label=None):
    """Run the benchmark; write ``out/results.json``, ``out/results.md`` and ``out/plot.png``; return the result.

    Args:
        quality: measure STS-B per contender (skip for random-weight models).
        scifact: measure SciFact nDCG@10 per e5onnx variant (full corpus; ~5 min per variant on 2 cores).
        label: a title for the table and plot (default: the folder path).
    """
    if quick:
        repeats, passages, queries, batch_sizes, scifact = 1, 16, 4, (1, 8), False
    manifest = read_manifest(model_dir)
    if source is None:
        source = manifest.get("source", {}).get("path")
    texts, qs, name = workload(passages, queries)
    variants = [v for v in VARIANTS if v in manifest["variants"]]
    all_specs = C.specs(model_dir, source, threads, manifest["max_length"], manifest["embedding_dim"], variants, skip)
    cs = [C.build(s) for s in all_specs]
    ours = next(c for c in cs if c.name.startswith("e5onnx"))
    tokens = sum(len(ids) for ids in ours.embedder.tokenize(texts))
    reference = "torch-fp32" if any(c.name == "torch-fp32" for c in cs) else cs[0].name
    result = {
        "model": str(model_dir), "label": label, "workload": f"{name}: {len(texts)} passages ({tokens} tokens), {len(qs)} queries",
        "repeats": repeats, "environment": environment(threads),
        "agreement": agreement(cs, texts[:64], reference),
        "passages": measure_passages(cs, texts, tokens, batch_sizes, repeats),
        "queries": measure_queries(cs, qs, repeats),
        "quality": (stsb_per_contender(cs, STSB, reference, pairs=64 if quick else None)
                    if quality and STSB.is_file() else {}),
        "scifact": _scifact(cs) if quality and scifact and (SCIFACT / "queries.test.jsonl").is_file() else {},
        "process": {c.name: {**cold_start_and_rss(s, texts[:128]), "model_mb": model_size_mb(s, manifest)}
                    for c, s in zip(cs, all_specs)},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    (out / "results.md").write_text(markdown(result), encoding="utf-8")
    plot(result, out / "plot.png")
    return result


def _scifact(contenders):
    import time

    out = {}
    for c in contenders:
        if c.name.startswith("e5onnx"):
            started = time.perf_counter()
            embed = lambda texts, e=c.embedder: e.embed(texts)  # noqa: E731 - MTEB scores MiniLM without prefixes
            out[c.name] = {"ndcg_at_10": scifact_ndcg10(embed, embed, SCIFACT),
                           "seconds": time.perf_counter() - started}
    return out
