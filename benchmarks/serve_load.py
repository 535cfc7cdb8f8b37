"""Load generator for ``e5onnx serve`` on loopback, side by side with the in-process Embedder in the same run.

    python benchmarks/serve_load.py MODEL_DIR --variant int8 --threads 2 --out benchmarks/results/server

Starts the server as a subprocess (same model, variant and threads as the in-process Embedder), then measures:

1. saturation throughput: SciFact passages (``passage: `` + title + text) in requests of 32 texts from
   ``--clients`` concurrent clients, tokens/s (real tokens, from ``usage``), against the in-process Embedder
   on the same requests one after the other (median of ``--repeats``); target >= 0.95 (issue 9; issue 3: 0.85);
2. single-request overhead: one SciFact query per request from one keep-alive client, p50 of the server
   minus p50 of ``Embedder.embed([q])`` in this process, measured in alternating blocks; target <= 0.5 ms
   (issue 9; issue 3: 1.5 ms), and beside it the bare HTTP round trip (``GET /v1/models`` p50), the share of the
   overhead that belongs to the HTTP stack and the client rather than to tokenising, queueing and the hop to
   the inference thread;
3. latency under 32 concurrent clients (threads of this process) sending single queries: p50/p99 ms;
4. server RSS (``/proc/PID/status`` VmRSS) over ``--rss-requests`` requests of random batch size 1-8 and
   length 1-128 words (10,000 requests in about 10 minutes), sampled every 500; flat means <= 10 % growth
   after the first 1,000. ``--rss-only`` skips 1-3 (RSS needs no quiet machine; timings do).

Clients ask for base64 vectors (what the openai client does by default), so decoding JSON floats in this
process does not slow the client side; latencies (2, 3) use a keep-alive ``http.client`` connection, the
lightest client at hand, so they measure the server more than the client (httpx adds ~0.4 ms per request). Results: ``results.json`` and ``results.md`` in ``--out``.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import httpx
import numpy as np

from e5onnx.bench.report import save_results
from e5onnx.bench.run import environment, workload
from rss_flat import status_mb, text  # this folder: the same random texts and /proc reader as rss_flat.py

#: Targets of issue 9: server saturation tokens/s over the in-process Embedder's, and single-request p50 overhead.
SATURATION_TARGET = 0.95
OVERHEAD_TARGET_MS = 0.5
#: Server RSS growth after request 1,000, percent (issue 3).
RSS_GROWTH_TARGET_PCT = 10
from e5onnx.runtime import Embedder

def start_server(model, variant, threads, flags=(), env=None):
    """``(process, url)`` of ``e5onnx serve`` on a port it picks itself (``--port 0``), read back from its
    start-up line ``e5onnx serving NAME on http://HOST:PORT ...``, logged once it answers. ``flags``: more
    ``serve`` flags; ``env``: variables set for the process (e.g. ``PYTHONPATH`` of another checkout)."""
    env = {**os.environ, "E5ONNX_MAX_QUEUE": "100000", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "e5onnx.cli", "serve", model, "--port", "0", "--variant",
                             variant, "--threads", str(threads), *flags], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # ends when the server does
        found = re.search(r"e5onnx serving .* on (http://\S+) ", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe from filling
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError(f"the server did not start (exit status {proc.wait()})")


def post(client, texts):
    r = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64", "truncate": True})
    r.raise_for_status()
    return r.json()["usage"]["prompt_tokens"]


def saturation(url, embedder, requests, clients, repeats):
    """``(server tokens/s, in-process tokens/s)``, medians of alternating repeats."""
    server, local = [], []
    tokens = sum(len(r) for req in requests for r in embedder.tokenize(req))
    pool = concurrent.futures.ThreadPoolExecutor(clients)
    http = [httpx.Client(base_url=url, timeout=600) for _ in range(clients)]
    slot = {}

    def send(i):
        c = slot.setdefault(threading.get_ident(), http[len(slot) % clients])
        return post(c, requests[i])
    list(pool.map(send, range(min(clients, len(requests)))))  # warm-up: connections, arena
    embedder.embed(requests[0])
    for _ in range(repeats):
        t0 = time.perf_counter()
        sent = sum(pool.map(send, range(len(requests))))
        server.append(sent / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for req in requests:
            embedder.embed(req)
        local.append(tokens / (time.perf_counter() - t0))
    pool.shutdown()
    return statistics.median(server), statistics.median(local)


class RawClient:
    """A keep-alive HTTP/1.1 client on the standard library's ``http.client``: about 0.4 ms per request lighter
    than httpx here, so latencies measure the server rather than the client."""

    def __init__(self, url):
        host, port = url.rsplit("/", 1)[-1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def post(self, texts):
        body = json.dumps({"input": texts, "encoding_format": "base64", "truncate": True})
        self.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return json.loads(data)["usage"]["prompt_tokens"]

    def get(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return data

    def close(self):
        self.conn.close()


def single_overhead(url, embedder, queries, repeats):
    """p50 ms of one query per request (server) and per ``embed`` call (in-process): blocks of all queries,
    alternating; the median of the per-block medians."""
    server, local = [], []
    c = RawClient(url)
    for q in queries[:5]:
        c.post([q]), embedder.embed([q])
    for _ in range(repeats):
        for side, call in ((server, c.post), (local, embedder.embed)):
            block = []
            for q in queries:
                t0 = time.perf_counter()
                call([q])
                block.append(time.perf_counter() - t0)
            side.append(statistics.median(block))
    c.close()
    return 1000 * statistics.median(server), 1000 * statistics.median(local)


def http_floor(url, calls=500):
    """p50 ms of ``GET /v1/models`` from one keep-alive client: the HTTP stack's own round trip (uvicorn,
    Starlette, this client), with no tokenising, queueing or inference — the part of the single-request
    overhead that no change to the batching path can remove."""
    c = RawClient(url)
    for _ in range(20):
        c.get("/v1/models")
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        c.get("/v1/models")
        times.append(time.perf_counter() - t0)
    c.close()
    return 1000 * statistics.median(times)


def concurrent_latency(url, queries, clients):
    """p50 and p99 ms of single-query requests from ``clients`` concurrent keep-alive clients."""
    times = []

    def client(k):
        out, c = [], RawClient(url)
        for q in queries[k::clients] * 3:
            t0 = time.perf_counter()
            c.post([q])
            out.append(time.perf_counter() - t0)
        c.close()
        return out
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for out in pool.map(client, range(clients)):
            times += out
    return 1000 * float(np.percentile(times, 50)), 1000 * float(np.percentile(times, 99)), len(times)


def rss_over_requests(url, pid, n, seed=0):
    rng = random.Random(seed)
    samples = []
    with httpx.Client(base_url=url, timeout=600) as c:
        for i in range(1, n + 1):
            post(c, [text(rng, rng.randint(1, 128)) for _ in range(rng.randint(1, 8))])
            if i % 500 == 0:
                samples.append({"request": i, "rss_mb": round(status_mb("VmRSS", pid), 1)})
                print(samples[-1], flush=True)
    after = [s["rss_mb"] for s in samples if s["request"] >= 1000]
    growth = round(100 * (max(after) / after[0] - 1), 1) if len(after) >= 2 else None  # nothing after the warm-up
    return {"samples": samples, "growth_after_1000_pct": growth}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--variant", default="int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passages", type=int, default=256)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for the saturation run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss-requests", type=int, default=10000,
                   help="requests of the RSS run; growth is measured after the first 1,000 (0: no RSS run)")
    p.add_argument("--rss-only", action="store_true", help="only the RSS run (4)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    passages, queries, name = workload(args.passages, args.queries)
    requests = [passages[i:i + 32] for i in range(0, len(passages), 32)]
    embedder = Embedder.load(args.model, variant=args.variant, threads=args.threads)
    proc, url = start_server(args.model, args.variant, args.threads)
    try:
        result = {"model": args.model, "variant": embedder.variant, "workload": name,
                  "environment": environment(args.threads), "clients": args.clients, "repeats": args.repeats}
        if not args.rss_only:
            s, l = saturation(url, embedder, requests, args.clients, args.repeats)
            result["saturation"] = {"server_tokens_per_s": s, "in_process_tokens_per_s": l, "ratio": s / l}
            print(result["saturation"], flush=True)
            s, l = single_overhead(url, embedder, queries, args.repeats)
            result["single_request"] = {"server_p50_ms": s, "in_process_p50_ms": l, "overhead_ms": s - l,
                                        "http_get_p50_ms": http_floor(url)}
            print(result["single_request"], flush=True)
            p50, p99, n = concurrent_latency(url, queries, 32)
            result["concurrent_32"] = {"p50_ms": p50, "p99_ms": p99, "requests": n}
            print(result["concurrent_32"], flush=True)
        if args.rss_requests:
            result["rss"] = rss_over_requests(url, proc.pid, args.rss_requests)
    finally:
        proc.terminate()
        result["exit_status"] = proc.wait(60)
    result["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(save_results(args.out, result, markdown))


def markdown(r):
    env = r["environment"]
    rows = []
    if "saturation" in r:
        sat, one, conc = r["saturation"], r["single_request"], r["concurrent_32"]
        rows = [
            ("saturation tokens/s, server vs in-process", f"{sat['server_tokens_per_s']:.0f} vs "
             f"{sat['in_process_tokens_per_s']:.0f} = {sat['ratio']:.2f}", f">= {SATURATION_TARGET}",
             sat["ratio"] >= SATURATION_TARGET),
            ("single-request p50 overhead, ms", f"{one['server_p50_ms']:.2f} - {one['in_process_p50_ms']:.2f} = "
             f"{one['overhead_ms']:.2f}", f"<= {OVERHEAD_TARGET_MS}", one["overhead_ms"] <= OVERHEAD_TARGET_MS),
            ("of which the bare HTTP round trip (GET /v1/models p50), ms", f"{one['http_get_p50_ms']:.2f}"
             if "http_get_p50_ms" in one else "-", "", None),
            ("32 concurrent clients, single queries: p50 / p99 ms", f"{conc['p50_ms']:.1f} / {conc['p99_ms']:.1f}",
             "", None),
        ]
    if r.get("rss"):
        g = r["rss"]["growth_after_1000_pct"]
        first, last = r["rss"]["samples"][0]["rss_mb"], r["rss"]["samples"][-1]["rss_mb"]
        rows.append((f"server RSS over {r['rss']['samples'][-1]['request']} requests, MB", f"{first} -> {last} "
                     f"(+{g}% after request 1000)", f"<= {RSS_GROWTH_TARGET_PCT} %",
                     g is not None and g <= RSS_GROWTH_TARGET_PCT))
    lines = [f"# e5onnx serve vs in-process — {r['model']} ({r['variant']})", "",
             f"CPU: {env['cpu']['model']}; threads {env['threads']} on both sides; {r['workload']}; "
             f"{r['clients']} clients for saturation; medians of {r['repeats']}; {r['date']}", "",
             "| measure | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'' if d is None else ('yes' if d else 'NO')} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
