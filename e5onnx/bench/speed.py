"""Side-by-side speed of several contenders in one process, equal threads, warm-up, medians.

Workloads (texts as given, prefixes included):
- passages: ``passage: `` + title + text of SciFact documents (a fixed subset, mixed lengths), embedded in
  batches of each size in ``batch_sizes``; reported as tokens/s (real, unpadded tokens counted by the
  model's tokenizer) and texts/s, the median over ``repeats`` passes.
- queries: ``query: `` + SciFact queries, one text per call; reported as latency p50/p95/p99 in ms over
  every call of every repeat, each repeat a block of calls per contender.

Contenders run interleaved per repeat (A, B, C, A, B, C, ...), so slow drifts of the machine hit all alike.
"""

import statistics
import time

import numpy as np


def percentile_ms(seconds, q):
    """The ``q``-th percentile of a list of durations in seconds, in ms (NumPy's linear interpolation)."""
    return 1000 * float(np.percentile(np.asarray(seconds), q))


def measure_passages(contenders, texts, tokens, batch_sizes, repeats, warmup=1):
    """Throughput of each contender per batch size.

    Args:
        contenders: objects with ``name`` and ``embed(list[str]) -> (n, dim)``.
        texts: the passages; ``tokens`` their total real token count.
        batch_sizes: e.g. ``(1, 8, 32, 128)``.

    Returns:
        ``{name: {batch_size: {"tokens_per_s", "texts_per_s", "median_s", "runs_s"}}}``.
    """
    runs = {c.name: {b: [] for b in batch_sizes} for c in contenders}
    for b in batch_sizes:
        batches = [texts[i:i + b] for i in range(0, len(texts), b)]
        for c in contenders:  # warm-up: first calls allocate arenas and JIT paths
            for _ in range(warmup):
                c.embed(batches[0])
        for _ in range(repeats):
            for c in contenders:
                t0 = time.perf_counter()
                for batch in batches:
                    c.embed(batch)
                runs[c.name][b].append(time.perf_counter() - t0)
    return {
        name: {b: {"median_s": statistics.median(r), "tokens_per_s": tokens / statistics.median(r),
                   "texts_per_s": len(texts) / statistics.median(r), "runs_s": r} for b, r in per_b.items()}
        for name, per_b in runs.items()
    }


def measure_queries(contenders, queries, repeats, warmup=3):
    """Single-query latency of each contender: ``{name: {"p50_ms", "p95_ms", "p99_ms", "calls"}}``.

    Measured block-wise: each repeat runs every query through one contender, then the next. Interleaving per
    query would time the previous contender's idle threads (onnxruntime and OpenMP spin between calls by
    default) competing for the same cores, not the contender itself (benchmarks/README.md).
    """
    times = {c.name: [] for c in contenders}
    for _ in range(repeats):
        for c in contenders:
            for q in queries[:warmup]:  # untimed: lets the previous contender's threads go idle
                c.embed([q])
            for q in queries:
                t0 = time.perf_counter()
                c.embed([q])
                times[c.name].append(time.perf_counter() - t0)
    return {name: {"p50_ms": percentile_ms(t, 50), "p95_ms": percentile_ms(t, 95), "p99_ms": percentile_ms(t, 99),
                   "calls": len(t)} for name, t in times.items()}


def agreement(contenders, texts, reference_name):
    """Mean and min cosine of each contender's vectors to the reference contender's on ``texts``."""
    vectors = {c.name: np.asarray(c.embed(texts), dtype=np.float64) for c in contenders}
    ref = vectors[reference_name]
    return {name: {"mean_cosine": float(np.mean(np.sum(v * ref, axis=1))),
                   "min_cosine": float(np.min(np.sum(v * ref, axis=1))),
                   "max_abs_diff": float(np.abs(v - ref).max())} for name, v in vectors.items()}


def measure_mixed(contenders, queries, passage, repeats):
    """A mixed call against its parts, per contender: ``embed(queries + [passage])`` in one call vs
    ``embed(queries)`` then ``embed([passage])`` (31 SciFact queries + one ~420-token passage).

    Interleaved per repeat (mixed, parts, mixed, parts, ...) after one untimed warm-up of each; the ratio is
    median mixed seconds / median parts seconds (≤ 1 means packing loses nothing by mixing lengths).

    Returns:
        ``{name: {"mixed_ms", "parts_ms", "ratio", "texts", "repeats"}}`` (medians in ms).
    """
    mixed_texts = list(queries) + [passage]
    out = {}
    for c in contenders:
        c.embed(mixed_texts)
        c.embed(list(queries))
        c.embed([passage])
        mixed, parts = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            c.embed(mixed_texts)
            t1 = time.perf_counter()
            c.embed(list(queries))
            c.embed([passage])
            t2 = time.perf_counter()
            mixed.append(t1 - t0)
            parts.append(t2 - t1)
        m, p = statistics.median(mixed), statistics.median(parts)
        out[c.name] = {"mixed_ms": 1000 * m, "parts_ms": 1000 * p, "ratio": m / p, "texts": len(mixed_texts),
                       "repeats": repeats}
    return out
