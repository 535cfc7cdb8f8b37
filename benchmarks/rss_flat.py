"""RSS over many calls of random shape (target: flat within 10 % after a warm-up, over 2,000 calls).

Runs one e5onnx variant in this process: a warm-up call at the largest shape (batch 32 x max length), then
``--calls`` calls with batch sizes uniform in 1-32 and text lengths uniform in 1-512 words (seeded), and
records RSS (``/proc/self/status`` VmRSS) every 100 calls and the peak (VmHWM). Writes JSON to ``--out``.

    python benchmarks/rss_flat.py MODEL_DIR --variant int8 --calls 2000 --out benchmarks/results/rss_int8.json
"""

import argparse
import json
import random
import time
from pathlib import Path

from e5onnx.runtime import Embedder
from e5onnx.runtime.atomic import write_json_atomic

WORDS = ("protein cell membrane transport of ions regulates the expression gene patients were randomised "
         "trial results showed significant reduction risk mortality").split()


def status_mb(key, pid="self"):
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in MB (10^6 bytes); this process by default."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(key)


def text(rng, words):
    return "passage: " + " ".join(rng.choice(WORDS) for _ in range(words))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--variant", default="int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    e = Embedder.load(args.model, variant=args.variant, threads=args.threads)
    after_load = status_mb("VmRSS")
    e.embed([text(rng, 600) for _ in range(32)], batch_size=32)  # warm-up at the largest shape
    after_warmup = status_mb("VmRSS")
    samples, started = [], time.perf_counter()
    for call in range(1, args.calls + 1):
        e.embed([text(rng, rng.randint(1, 512)) for _ in range(rng.randint(1, 32))], batch_size=32)
        if call % 100 == 0:
            samples.append({"call": call, "rss_mb": round(status_mb("VmRSS"), 1)})
            print(samples[-1], flush=True)
    result = {"model": args.model, "variant": e.variant, "threads": e.threads, "calls": args.calls,
              "max_length": e.max_length, "rss_after_load_mb": round(after_load, 1),
              "rss_after_warmup_mb": round(after_warmup, 1), "samples": samples,
              "rss_end_mb": samples[-1]["rss_mb"] if samples else None, "peak_rss_mb": round(status_mb("VmHWM"), 1),
              "growth_after_warmup_pct": round(100 * (max(s["rss_mb"] for s in samples) / after_warmup - 1), 1)
              if samples else None, "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))


if __name__ == "__main__":
    main()
