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

from e5onnx.runtime.manifest import read_manifest
from e5onnx.runtime.session import make_feed


def profile(path, batch, seq, threads, runs):
    """``(median run ms, {op type: share of kernel time})`` of one ONNX file."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (batch, seq)).astype(np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = make_feed({i.name: np.int64 for i in session.get_inputs()}, ids, mask)
        session.run(None, feed)  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - started)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values()) or 1
    return 1000 * statistics.median(times), {op: t / total for op, t in per_op.most_common()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    manifest = read_manifest(args.model)
    for name, entry in manifest["variants"].items():
        if entry.get("backend", "onnxruntime") != "onnxruntime":
            continue
        ms, shares = profile(Path(args.model) / entry["file"], args.batch, args.seq, args.threads, args.runs)
        top = ", ".join(f"{op} {100 * s:.0f}%" for op, s in list(shares.items())[:8])
        print(f"{name:10s} {ms:8.1f} ms/run (profiling on)  {top}")


if __name__ == "__main__":
    main()
