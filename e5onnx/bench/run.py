"""``e5onnx bench``: every contender side by side in one process run.

Contenders: the PyTorch reference (transformers fp32), fastembed on the same ``model.onnx``,
sentence-transformers' ONNX backend fp32 and its dynamic-int8 export (when sentence-transformers imports and
a source folder is known), and each e5onnx variant in the model folder, all with the same thread count. The
same run measures this machine's GEMM roofline at the model's shapes (:mod:`e5onnx.bench.roofline`) and a
mixed call (31 queries + one ~420-token passage). Writes ``results.json``, ``results.md`` (with the
environment) and ``plot.png`` to ``--out``. ``--quick`` only checks that the harness runs.
"""

import gc
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..config import (
    BENCH_BATCH_SIZES,
    BENCH_MIXED_PASSAGE_TOKENS,
    BENCH_MIXED_QUERIES,
    BENCH_PASSAGES,
    BENCH_QUERIES,
    BENCH_REPEATS,
    BENCH_THREADS,
    TOKEN_BUDGET,
    VARIANTS,
    shared_dir,
)
from ..environment import describe
from ..runtime.atomic import write_json_atomic
from ..runtime.manifest import Manifest
from . import contenders as C
from . import roofline
from .probe import cold_start_and_rss
from .quality import scifact_ndcg10, stsb_per_contender
from .report import (
    mixed_markdown,
    plot,
    roofline_markdown,
    targets_markdown,
    vs_roofline,
)
from .speed import agreement, measure_mixed, measure_passages, measure_queries


def scifact_dir():
    """BEIR SciFact's folder in the shared data (:func:`~e5onnx.config.shared_dir` ``/data/scifact``)."""
    return shared_dir() / "data" / "scifact"


def stsb_file():
    """The STS-B test split in the shared data (:func:`~e5onnx.config.shared_dir` ``/data/stsb/sts-test.tsv``)."""
    return shared_dir() / "data" / "stsb" / "sts-test.tsv"


def workload(n_passages, n_queries, folder=None):
    """SciFact passages (``passage: `` + title + text, the first n) and queries (``query: ``) from ``folder``
    (default :func:`scifact_dir`), else synthetic."""
    folder = scifact_dir() if folder is None else Path(folder)
    if (folder / "queries.test.jsonl").is_file():
        from .quality import read_scifact

        _, docs, _, queries, _ = read_scifact(folder)
        return (["passage: " + d for d in docs[:n_passages]], ["query: " + q for q in queries[:n_queries]],
                "SciFact test (BEIR)")
    words = ["the", "cell", "membrane", "regulates", "transport", "of", "ions", "and", "small", "molecules", "across", "the", "lipid", "bilayer"]
    passages = ["passage: " + " ".join(words[j % len(words)] for j in range(5 + (i * 37) % 300))
                for i in range(n_passages)]
    return passages, [f"query: what regulates ion transport {i}" for i in range(n_queries)], "synthetic"


def long_passage(tokenize, target=BENCH_MIXED_PASSAGE_TOKENS, folder=None, scan=400):
    """``(text, tokens)``: the SciFact passage (``passage: `` + title + text) among the first ``scan`` whose
    token count (``tokenize(list) -> id lists``) is closest to ``target``; a synthetic one without SciFact
    (``folder`` defaults to :func:`scifact_dir`)."""
    folder = scifact_dir() if folder is None else Path(folder)
    if (folder / "queries.test.jsonl").is_file():
        from .quality import read_scifact

        docs = ["passage: " + d for d in read_scifact(folder)[1][:scan]]
    else:
        words = ["the", "cell", "membrane", "regulates", "transport", "of", "ions", "and", "small", "molecules", "across", "the", "lipid", "bilayer"]
        docs = ["passage: " + " ".join(words[j % len(words)] for j in range(n)) for n in range(50, 600, 10)]
    lengths = [len(ids) for ids in tokenize(docs)]
    best = min(range(len(docs)), key=lambda i: abs(lengths[i] - target))
    return docs[best], lengths[best]


def mixed_queries(queries, n=BENCH_MIXED_QUERIES):
    """``n`` queries for the mixed call: the workload's first ``n``, cycled when it has fewer."""
    return [queries[i % len(queries)] for i in range(n)] if queries else []


def environment(threads):
    """The machine and library versions of a benchmark run, with its thread count and date."""
    names = ("e5onnx", "onnxruntime", "openvino", "torch", "transformers", "fastembed", "sentence-transformers",
             "optimum", "tokenizers", "numpy")
    return {**describe(names), "threads": threads, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def model_size_mb(spec, manifest):
    """Size of the weights file a contender loads, MB (10^6 bytes)."""
    if spec["kind"] == "torch":
        weights = manifest.source.weights
        return sum(w.size for w in weights.values()) / 1e6 if weights else None
    if spec["kind"] == "st":
        return (Path(spec["st_dir"]) / C.ST_FILES[spec["name"]]).stat().st_size / 1e6
    return manifest.files[manifest.variant_file(spec.get("variant", "fp32"))].size / 1e6


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
    lines += roofline_markdown(result) + mixed_markdown(result) + targets_markdown(result)
    if result.get("skipped"):
        lines += ["", "Not in this run: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    if result.get("quality"):
        q0 = next(iter(result["quality"].values()))
        lines += ["", f"## Quality on STS-B test ({q0['sentences']} sentences, batch 32)", "",
                  "| contender | Spearman x100 | mean cos to torch | min cos to torch |", "|---|---|---|---|"]
        for name, q in result["quality"].items():
            lines.append(f"| {name} | {q['stsb_spearman']:.2f} | {q['mean_cosine_to_reference']:.6f} | "
                         f"{q['min_cosine_to_reference']:.6f} |")
    return "\n".join(lines) + "\n"


def run(model_dir, out, source=None, threads=BENCH_THREADS, repeats=BENCH_REPEATS, passages=BENCH_PASSAGES,
        queries=BENCH_QUERIES, batch_sizes=BENCH_BATCH_SIZES, quick=False, skip=(), quality=True, scifact=True, label=None):
    """Run the benchmark; write ``out/results.json``, ``out/results.md`` and ``out/plot.png``; return the result.

    Args:
        skip: contenders to leave out: ``"torch"``, ``"fastembed"``, ``"st"`` (sentence-transformers).
        quality: measure STS-B per contender (skip for random-weight models).
        scifact: measure SciFact nDCG@10 per e5onnx variant (full corpus; ~5 min per variant on 2 cores).
        label: a title for the table and plot (default: the folder path).
    """
    if quick:
        repeats, passages, queries, batch_sizes, scifact = 1, 16, 4, (1, 8), False
    manifest = Manifest.read(model_dir)
    if source is None:
        source = manifest.source.path
    st_tmp, skipped = _sentence_transformers_folder(source, skip, threads)
    try:
        result = _measure(model_dir, manifest, source, threads, repeats, passages, queries, batch_sizes, quick,
                          skip, quality, scifact, label, st_tmp, skipped)
    finally:
        if st_tmp:
            shutil.rmtree(st_tmp, ignore_errors=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    (out / "results.md").write_text(markdown(result), encoding="utf-8")
    plot(result, out / "plot.png")
    return result


def _sentence_transformers_folder(source, skip, threads):
    """``(folder or None, {contender: reason skipped})``: sentence-transformers' own ONNX export of ``source``
    in a temporary folder (the caller removes it), or why there is none (the reason is also printed)."""
    if "st" in skip:
        return None, {}
    reason = C.sentence_transformers_missing()
    if reason is None and not source:
        reason = "no source folder to export from (pass --source)"
    folder = None
    if reason is None:
        folder = Path(tempfile.mkdtemp(prefix="e5onnx-bench-st-"))
        try:
            C.prepare_sentence_transformers(source, folder, threads)
        except Exception as exc:  # an export failure should not cost the rest of the run
            shutil.rmtree(folder, ignore_errors=True)
            folder, reason = None, f"its ONNX export failed ({type(exc).__name__}: {str(exc)[:200]})"
    if reason:
        print(f"e5onnx bench: skipping the sentence-transformers contenders: {reason}", file=sys.stderr)
        return None, {name: reason for name in C.ST_FILES}
    return folder, {}


def _measure(model_dir, manifest, source, threads, repeats, passages, queries, batch_sizes, quick, skip, quality,
             scifact, label, st_dir, skipped):
    """Build the contenders and measure everything (see :func:`run`); returns the result dict."""
    texts, qs, name = workload(passages, queries)
    stsb, scifact_folder = stsb_file(), scifact_dir()
    variants = [v for v in VARIANTS if v in manifest.variants]
    all_specs = C.specs(model_dir, source, threads, manifest.max_length, manifest.embedding_dim, variants, skip,
                        st_dir=st_dir)
    cs = [C.build(s) for s in all_specs]
    ours = [c for c in cs if c.name.startswith("e5onnx")]
    tokens = ours[0].embedder.prepare(texts).tokens
    query_tokens = round(statistics.median(ours[0].embedder.prepare(qs).token_counts.tolist()))
    passage, passage_tokens = long_passage(ours[0].embedder.tokenize)
    reference = "torch-fp32" if any(c.name == "torch-fp32" for c in cs) else cs[0].name
    result = {
        "model": str(model_dir), "label": label, "workload": f"{name}: {len(texts)} passages ({tokens} tokens), {len(qs)} queries",
        "repeats": repeats, "environment": environment(threads), "skipped": skipped,
        "auto_variant": manifest.choose_variant("auto"),
        "roofline": roofline.measure(threads, **roofline.shape_from_config(model_dir), passage_m=TOKEN_BUDGET,
                                     query_m=query_tokens, min_seconds=0.05 if quick else 0.5),
        "agreement": agreement(cs, texts[:64], reference),
        "passages": measure_passages(cs, texts, tokens, batch_sizes, repeats),
        "queries": measure_queries(cs, qs, repeats),
        "mixed_passage_tokens": passage_tokens,
        "mixed": measure_mixed(ours, mixed_queries(qs), passage, max(5, 3 * repeats)),
        "quality": (stsb_per_contender(cs, stsb, reference, pairs=64 if quick else None)
                    if quality and stsb.is_file() else {}),
        "scifact": (_scifact(cs, scifact_folder)
                    if quality and scifact and (scifact_folder / "queries.test.jsonl").is_file() else {}),
    }
    # Each probe runs in a fresh process: first release this process's sessions and their onnxruntime arenas
    # (GBs for the peers that run a call as one pass), so they do not sit in memory beside every probe.
    names = [c.name for c in cs]
    del cs, ours
    gc.collect()
    result["process"] = {name: {**cold_start_and_rss(s, texts[:128]), "model_mb": model_size_mb(s, manifest)}
                         for name, s in zip(names, all_specs)}
    result["vs_roofline"] = vs_roofline(result)
    return result


def _scifact(contenders, folder):
    import time

    out = {}
    for c in contenders:
        if c.name.startswith("e5onnx"):
            started = time.perf_counter()
            embed = lambda texts, e=c.embedder: e.embed(texts)  # MTEB scores MiniLM without prefixes
            out[c.name] = {"ndcg_at_10": scifact_ndcg10(embed, embed, folder),
                           "seconds": time.perf_counter() - started}
    return out
