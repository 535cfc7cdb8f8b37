"""CPU cost of the server's request path without inference, between two checkouts: does the cache-off path cost
anything? Wall-clock latencies on a shared 2-core machine vary by more than the path itself; the CPU time of
the process per request does not.

    git archive BASE_COMMIT e5onnx | tar -x -C /tmp/e5onnx-before
    python benchmarks/serve_path_cost.py MODEL_DIR --before /tmp/e5onnx-before --rounds 7 --requests 2000

Each measurement is a fresh interpreter (``PYTHONPATH`` = the checkout) that loads the model, replaces
``Embedder.run`` by a stub returning unit vectors (no inference: what remains is Starlette, parsing, tokenising, the
batcher's queue and thread hop, the cache when on, JSON and base64), and sends ``--requests`` requests of one
SciFact query (``/v1/embeddings``, base64) through Starlette's TestClient: CPU seconds of the process
(``time.process_time``, every thread) and wall p50 per request. Variants, interleaved in rotating order each
round: ``before``; ``off`` (this checkout); ``miss`` (cache on, every text new); ``hit`` (cache on, every
request a hit). Prints a JSON line per measurement and a table of medians; ``--out FILE`` writes them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

#: Run in the measured interpreter: argv = model, requests, cache entries (0: none), repeat texts (0/1).
CHILD = r"""
import json, statistics, sys, time
import numpy as np
from starlette.testclient import TestClient
from e5onnx.bench.run import workload
from e5onnx.runtime import Embedder
from e5onnx.server.app import create_app
from e5onnx.server.settings import ServerSettings

model, n, entries, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
def unit(n, dim):
    out = np.zeros((n, dim), np.float32)
    out[:, 0] = 1  # unit vectors: the start-up check wants them
    return out


Embedder.run = lambda self, prepared, normalize=True, **kw: (
    [unit(len(p), self.dim) for p in prepared] if isinstance(prepared, list) else unit(len(prepared), self.dim))
e = Embedder.load(model, variant="int8", threads=1)
settings = ServerSettings(model="m", **({"cache_entries": entries} if entries else {}))
_, queries, _ = workload(0, 100)
texts = [queries[i % 100] if repeat else f"{queries[i % 100]} [{i}]" for i in range(n)]
with TestClient(create_app(e, settings, "m")) as client:
    for t in texts[:200] if repeat else ["warm up"] * 200:
        client.post("/v1/embeddings", json={"input": t, "encoding_format": "base64"})
    times, cpu0 = [], time.process_time()
    for t in texts:
        t0 = time.perf_counter()
        r = client.post("/v1/embeddings", json={"input": t, "encoding_format": "base64"})
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    cpu = time.process_time() - cpu0
print(json.dumps({"cpu_us": 1e6 * cpu / n, "wall_p50_us": 1e6 * statistics.median(times)}))
"""

#: name -> (checkout on PYTHONPATH: "before" or "this", cache entries, repeat texts)
VARIANTS = {"before": ("before", 0, False), "off": ("this", 0, False), "miss": ("this", 100000, False),
            "hit": ("this", 100000, True)}


def measure(model, path, requests, entries, repeat):
    shared = os.environ.get("E5ONNX_SHARED") or str(Path(__file__).resolve().parents[2] / "shared")
    env = {**os.environ, "PYTHONPATH": str(path), "E5ONNX_THREADS": "1", "E5ONNX_SHARED": shared}  # same texts
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(requests), str(entries), "1" if repeat else "0"],
                         env=env, capture_output=True, text=True, check=False, cwd="/")
    if out.returncode:
        raise SystemExit(f"the measured interpreter failed (PYTHONPATH={path}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--before", required=True, help="folder holding the e5onnx package before the change")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--out", help="write the measurements and medians (JSON) here")
    args = p.parse_args(argv)
    paths = {"before": Path(args.before).resolve(), "this": Path(__file__).resolve().parents[1]}
    names, runs = list(VARIANTS), {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            checkout, entries, repeat = VARIANTS[name]
            runs[name].append(measure(args.model, paths[checkout], args.requests, entries, repeat))
            print(json.dumps({"round": r, "variant": name, **runs[name][-1]}), flush=True)
    medians = {name: {k: statistics.median(m[k] for m in runs[name]) for k in ("cpu_us", "wall_p50_us")}
               for name in names}
    print("| variant | CPU µs per request | wall p50 µs |\n|---|---|---|")
    for name in names:
        print(f"| {name} | {medians[name]['cpu_us']:.0f} | {medians[name]['wall_p50_us']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "medians": medians, "rounds": args.rounds,
                                              "requests": args.requests}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
