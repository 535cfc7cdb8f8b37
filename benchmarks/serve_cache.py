"""The result cache of ``e5onnx serve`` (``--cache-entries``): what the cache-off path costs, and what hits gain.

    git archive BASE_COMMIT e5onnx | tar -x -C /tmp/e5onnx-before     # the server before the cache
    python benchmarks/serve_cache.py MODEL_DIR --before /tmp/e5onnx-before --variant int8 --threads 2 \\
        --out benchmarks/results/server-cache-e5-small-shaped-int8

Three servers of the same model, variant and threads run side by side (one busy at a time): ``before`` (the
package at ``--before``), ``off`` (this checkout, no cache) and ``on`` (this checkout, ``--cache-entries``).

1. Cache-off cost, ``before`` vs ``off`` (and the miss path, ``on``): single SciFact queries from one keep-alive
   client, p50 ms per block; and requests of 32 SciFact passages, mean ms per request. Every round sends texts no server
   has seen (a round tag is appended), so ``on`` only misses; rounds interleave the servers, rotating their
   order; medians over rounds.
2. Hit-heavy workloads, ``off`` vs ``on``: 1,000 single queries drawn from 100 (the cache warmed once: every
   request a hit), p50 ms; and the passage requests of (1) sent again (all hits), mean ms per request.
3. Memory: bytes per entry of a filled :class:`~e5onnx.server.cache.ResultCache` (tracemalloc, this process).

Results: ``results.json`` and ``results.md`` in ``--out``. Timings on a shared machine are noisy: compare the
servers within one run, not across runs.
"""

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from e5onnx.bench.report import save_results
from e5onnx.bench.run import environment, workload
from e5onnx.server.cache import ResultCache
from e5onnx.server.requests import EmbedRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import RawClient, post, start_server  # noqa: E402  (this folder)


def single_p50(url, queries):
    """p50 ms of one query per request from one keep-alive client."""
    c, times = RawClient(url), []
    for q in queries:
        t0 = time.perf_counter()
        c.post([q])
        times.append(time.perf_counter() - t0)
    c.close()
    return 1000 * statistics.median(times)


def batch_ms(url, requests):
    """Mean ms per request of ``requests`` (lists of texts) sent one after the other from one client."""
    with httpx.Client(base_url=url, timeout=600) as c:
        t0 = time.perf_counter()
        for r in requests:
            post(c, r)
        return 1000 * (time.perf_counter() - t0) / len(requests)


def interleaved(servers, rounds, measure):
    """``{name: [value per round]}`` of ``measure(url, round)``, the servers' order rotating each round."""
    out = {name: [] for name in servers}
    names = list(servers)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(measure(servers[name], r))
    return out


def bytes_per_entry(entries, dim):
    """Bytes traced per entry of a :class:`ResultCache` of ``entries`` entries filled with distinct texts."""
    tracemalloc.start()
    cache = ResultCache(entries, dim, b"model")
    vectors = np.random.default_rng(0).standard_normal((1000, dim)).astype(np.float32)
    for start in range(0, entries, 1000):
        req = EmbedRequest(texts=[f"text number {i}" for i in range(start, start + 1000)])
        cache.store(cache.lookup(req), vectors, np.full(1000, 12))
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used / entries


def summary(per_round):
    return {"median": statistics.median(per_round), "rounds": per_round}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--before", required=True, help="folder holding the e5onnx package before the cache")
    p.add_argument("--variant", default="int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-entries", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--passages", type=int, default=128)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    passages, queries, name = workload(args.passages, args.queries)
    flags = {"before": ((), {"PYTHONPATH": args.before}), "off": ((), None),
             "on": (("--cache-entries", str(args.cache_entries)), None)}
    procs, servers = [], {}
    try:
        for label, (extra, env) in flags.items():
            proc, url = start_server(args.model, args.variant, args.threads, extra, env)
            procs.append(proc)
            servers[label] = url
        if "cache" in httpx.get(servers["before"] + "/info", timeout=60).json():  # run from outside this checkout:
            raise SystemExit("the 'before' server runs this checkout's code (python -m puts the working folder "
                             "first on sys.path): run this script from another folder")
        for url in servers.values():  # warm-up: connections, arenas
            single_p50(url, [q + " warm" for q in queries[:10]])
            batch_ms(url, [[p + " warm" for p in passages[:32]]])
        tag = lambda texts, r: [f"{t} [{r}]" for t in texts]  # noqa: E731 - texts no server has seen
        requests = [passages[i:i + 32] for i in range(0, len(passages), 32)]
        result = {"model": args.model, "variant": args.variant, "workload": name, "rounds": args.rounds,
                  "cache_entries": args.cache_entries, "environment": environment(args.threads)}
        single = interleaved(servers, args.rounds, lambda url, r: single_p50(url, tag(queries, r)))
        result["single_query_p50_ms"] = {k: summary(v) for k, v in single.items()}
        print(result["single_query_p50_ms"], flush=True)
        batch = interleaved(servers, args.rounds, lambda url, r: batch_ms(
            url, [tag(req, r) for req in requests]))
        result["batch_ms_per_request"] = {k: summary(v) for k, v in batch.items()}
        print(result["batch_ms_per_request"], flush=True)
        hot = {k: servers[k] for k in ("off", "on")}
        pool = [q + " [hot]" for q in queries]
        draws = [random.Random(i).choice(pool) for i in range(1000)]
        single_p50(servers["on"], pool)  # every later request is a hit
        batch_ms(servers["on"], requests)
        result["hits_single_query_p50_ms"] = {k: summary(v) for k, v in interleaved(
            hot, args.rounds, lambda url, r: single_p50(url, draws)).items()}
        print(result["hits_single_query_p50_ms"], flush=True)
        result["hits_batch_ms_per_request"] = {k: summary(v) for k, v in interleaved(
            hot, args.rounds, lambda url, r: batch_ms(url, requests)).items()}
        print(result["hits_batch_ms_per_request"], flush=True)
        stats = httpx.get(servers["on"] + "/metrics", timeout=60).text
        result["on_metrics"] = [line for line in stats.splitlines() if line.startswith("e5onnx_cache_")
                                and "_created" not in line]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(60)
    result["bytes_per_entry_100k_384"] = bytes_per_entry(100_000, 384)
    result["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(save_results(args.out, result, markdown))


def markdown(r):
    env, one, batch = r["environment"], r["single_query_p50_ms"], r["batch_ms_per_request"]
    hot1, hotb = r["hits_single_query_p50_ms"], r["hits_batch_ms_per_request"]
    med = lambda d, k: f"{d[k]['median']:.2f}"  # noqa: E731
    rows = [
        ("single query p50, ms (unique texts: misses)", med(one, "before"), med(one, "off"), med(one, "on")),
        ("32 passages, ms per request (unique texts: misses)", med(batch, "before"), med(batch, "off"),
         med(batch, "on")),
        ("single query p50, ms (1,000 drawn from 100: hits)", "", med(hot1, "off"), med(hot1, "on")),
        ("32 passages, ms per request (sent before: hits)", "", med(hotb, "off"), med(hotb, "on")),
    ]
    lines = [f"# e5onnx serve result cache — {r['model']} ({r['variant']})", "",
             f"CPU: {env['cpu']['model']}; threads {env['threads']}; {r['workload']}; medians of {r['rounds']} "
             f"interleaved rounds; --cache-entries {r['cache_entries']}; {r['date']}", "",
             "| measure | before the cache | cache off | cache on |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += ["", f"Memory: {r['bytes_per_entry_100k_384']:.0f} bytes per entry (100,000 entries of 384 float32: "
              f"{384 * 4} bytes of vector each).", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
