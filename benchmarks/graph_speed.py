"""Raw onnxruntime speed of ONNX graphs side by side: the same fed token ids, no tokeniser or pooling.

    python benchmarks/graph_speed.py A.onnx B.onnx ... [--threads 2] [--rounds 5]

Each round runs every graph on each shape in turn (interleaved), a warm-up call first; the figure is the
minimum over rounds of the mean time of a block of calls (3 calls for shapes of more than 500 tokens, else
30). Shapes: one 4 x 256-token pass (1,024 tokens, the runtime's token budget), 32 x 32 (a batch of short
texts) and 1 x 20 (a single query). Sessions use the runtime's own settings (``OnnxEncoder``).
"""

import argparse
import time

import numpy as np

from e5onnx.runtime.session import OnnxEncoder

SHAPES = {"4x256": (4, 256), "32x32": (32, 32), "1x20": (1, 20)}


def measure(paths, threads, rounds, seed=0):
    """``{(path, shape name): seconds per call}``, minimum over ``rounds`` interleaved rounds."""
    encoders = {p: OnnxEncoder(p, threads) for p in paths}
    rng = np.random.default_rng(seed)
    best = {}
    for _ in range(rounds):
        for name, (batch, seq) in SHAPES.items():
            ids = rng.integers(1000, 30000, (batch, seq)).astype(np.int64)
            ids[:, 0] = 101
            mask = np.ones_like(ids)
            calls = 3 if batch * seq > 500 else 30
            for path, encoder in encoders.items():
                encoder.run(ids, mask)
                started = time.perf_counter()
                for _ in range(calls):
                    encoder.run(ids, mask)
                took = (time.perf_counter() - started) / calls
                best[(path, name)] = min(best.get((path, name), took), took)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("graphs", nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    best = measure(args.graphs, args.threads, args.rounds)
    print("| shape | graph | ms per call | tokens/s |\n|---|---|---|---|")
    for name, (batch, seq) in SHAPES.items():
        for path in args.graphs:
            t = best[(path, name)]
            print(f"| {name} | {path} | {1000 * t:.2f} | {batch * seq / t:.0f} |")


if __name__ == "__main__":
    main()
