"""Throughput of each variant of one model folder, side by side in one process, equal threads.

Usage: python benchmarks/variant_speed.py MODEL_DIR [--threads 2] [--repeats 5] [--texts 256]

Workload: SciFact documents from ../shared (``passage: `` + title + text, the first N of the corpus,
truncated at the folder's max length), else synthetic passages of mixed length. Each variant is warmed up
once, then timed ``--repeats`` times over the whole workload (batch size 32); the median is reported as
passage tokens/s (real, unpadded tokens) and as a ratio to fp32 measured in the same run.
This is a quick check; the side-by-side benchmark with peers is `e5onnx bench` (benchmarks/README.md).
"""

import argparse
import json
import statistics
import time

from e5onnx.config import shared_dir
from e5onnx.runtime import Embedder

SCIFACT = shared_dir() / "data" / "scifact"


def workload(n):
    texts = []
    for part in sorted(SCIFACT.glob("corpus.part*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            texts.append(f"passage: {doc['title']} {doc['text']}")
            if len(texts) == n:
                return texts, "SciFact corpus (first %d documents)" % n
    words = "the cell membrane regulates transport of ions and small molecules across the lipid bilayer".split()
    return [" ".join(words[j % len(words)] for j in range(8 + (i * 37) % 400)) for i in range(n)], "synthetic"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--texts", type=int, default=256)
    args = p.parse_args()
    texts, source = workload(args.texts)
    results = {}
    for variant in ("fp32", "optimized", "int8"):
        try:
            e = Embedder.load(args.model_dir, variant=variant, threads=args.threads)
        except Exception as exc:  # a variant that was not exported
            print(f"{variant}: skipped ({exc})")
            continue
        tokens = sum(len(ids) for ids in e.tokenize(texts))
        e.embed(texts[:64])
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            e.embed(texts)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results[variant] = {"median_s": med, "tokens_per_s": tokens / med, "texts_per_s": len(texts) / med}
    base = results.get("fp32", {}).get("tokens_per_s")
    print(f"workload: {source}, {len(texts)} texts, threads={args.threads}, repeats={args.repeats} (median)")
    print("| variant | tokens/s | texts/s | vs fp32 |\n|---|---|---|---|")
    for v, r in results.items():
        print(f"| {v} | {r['tokens_per_s']:.0f} | {r['texts_per_s']:.1f} | {r['tokens_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
