"""Where the time goes: onnxruntime's profiler, time per operator type for each variant of a model folder.

    python benchmarks/profile_ops.py MODEL_DIR [--batch 32] [--seq 128] [--threads 2] [--runs 5]

Feeds one random batch (``--batch`` x ``--seq`` token ids, all real tokens) to each onnxruntime variant
(fp32, optimized, int8) with profiling on, and prints the median wall time per run and the share of kernel
time per operator type (from the profile's ``*_kernel_time`` events), largest first.
"""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from e5onnx.config import ORT_DISABLED_OPTIMIZERS, VARIANT_BACKENDS
from e5onnx.runtime.manifest import Manifest
from e5onnx.runtime.session import make_feed, session_options


def profile(path, batch, seq, threads, runs):
    """``(median run ms, {op type: (share of kernel time, kernel ms per run)})`` of one ONNX file."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (batch, seq)).astype(np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    options, run_options = session_options(threads)  # the runtime's own settings, plus profiling
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=ORT_DISABLED_OPTIMIZERS)
        feed = make_feed({i.name: np.int64 for i in session.get_inputs()}, ids, mask)
        session.run(None, feed, run_options)  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feed, run_options)
            times.append(time.perf_counter() - started)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values()) or 1
    per_run = runs + 1  # the warm-up run is profiled too
    return 1000 * statistics.median(times), {op: (t / total, t / 1000 / per_run) for op, t in per_op.most_common()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    manifest = Manifest.read(args.model)
    for name, entry in manifest.variants.items():
        if name in VARIANT_BACKENDS:  # not run by onnxruntime
            continue
        ms, shares = profile(Path(args.model) / entry.file, args.batch, args.seq, args.threads, args.runs)
        top = ", ".join(f"{op} {100 * s:.0f}% ({ms_op:.1f} ms)" for op, (s, ms_op) in list(shares.items())[:8])
        print(f"{name:10s} {ms:8.1f} ms/run (profiling on)  {top}")


if __name__ == "__main__":
    main()
