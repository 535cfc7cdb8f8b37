"""Measure the Ray backend against the in-process Embedder on the same records and threads (``actor_plan``'s rule).

``python benchmarks/ray_plans.py MODEL FILE.jsonl [--variant int8] [--repeats 2] [--plans 1x2x2,2x1x1]``

Each round runs the in-process backend (:func:`~e5onnx.corpus.local.local_windows`, one Embedder of the node's
CPUs in threads) and then each plan (``SIZExNUM_CPUSxTHREADS``; ``auto`` = :func:`~e5onnx.ray.plan.actor_plan`'s)
through :func:`~e5onnx.ray.windows.ray_windows`, interleaved, on one local Ray of the machine's CPUs started
once (its start-up not timed; actor start-up and model load are). Prints tokens/s per run and the medians.
"""

import argparse
import os
import statistics
import threading
import time

from e5onnx.config import CORPUS_WINDOW_ROWS, RAY_BLOCK_BYTES
from e5onnx.runtime.cpu import available_cpus


class ForeignCpu:
    """CPU seconds used by processes outside this one and its children (Ray's raylet and workers are children of
    a driver that started Ray) while a run goes on, sampled every ``interval`` s with psutil (None without it): a
    run that shared the cores with someone else is flagged."""

    def __init__(self, interval=0.5):
        try:
            import psutil
        except ImportError:
            psutil = None
        self.psutil, self.interval, self.seconds = psutil, interval, None

    def __enter__(self):
        if self.psutil is not None:
            self.seconds, self._stop = 0.0, threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.psutil is not None:
            self._stop.set()
            self._thread.join()

    def _times(self):
        me = self.psutil.Process(os.getpid())
        mine = {me.pid} | {p.pid for p in me.children(recursive=True)}
        out = {}
        for proc in self.psutil.process_iter(["pid", "cpu_times"]):
            times = proc.info["cpu_times"]
            if proc.info["pid"] not in mine and times is not None:
                out[proc.info["pid"]] = times.user + times.system
        return out

    def _run(self):
        before = self._times()
        while not self._stop.wait(self.interval):
            now = self._times()
            self.seconds += sum(max(0.0, t - before.get(pid, t)) for pid, t in now.items())
            before = now


def _source(path):
    from e5onnx.corpus.sources import open_source

    return open_source([path], "jsonl", "text", "title", "_id")


def _plan(text):
    from e5onnx.ray.plan import ActorPlan, actor_plan, node_resources

    if text == "auto":
        return actor_plan(node_resources())
    size, cpus, threads = text.split("x")
    return ActorPlan(int(size), float(cpus), int(threads))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/ray_plans.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("input", help="JSONL with _id, title, text (SciFact's corpus)")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plans", default="auto", help="comma-separated SIZExNUM_CPUSxTHREADS or auto")
    parser.add_argument("--window-rows", type=int, default=CORPUS_WINDOW_ROWS)
    parser.add_argument("--block-kib", type=int, default=None, help="ray_windows' block_bytes / 1024 (default its own)")
    args = parser.parse_args(argv)

    import ray

    from e5onnx.corpus.local import local_windows
    from e5onnx.ray.windows import ray_windows
    from e5onnx.runtime.embedder import Embedder

    block_bytes = args.block_kib * 1024 if args.block_kib else RAY_BLOCK_BYTES
    cpus = available_cpus()
    source = _source(args.input)
    ray.init(num_cpus=cpus, include_dashboard=False)
    plans = [(text, _plan(text)) for text in args.plans.split(",")]
    results = {"local": []} | {text: [] for text, _ in plans}
    clean = {name: [] for name in results}  # runs during which other processes used <= 5 % of the cores
    for round_ in range(args.repeats):
        with ForeignCpu() as foreign:
            started = time.perf_counter()
            embedder = Embedder.load(args.model, args.variant, threads=cpus)
            tokens = sum(w.tokens for w in local_windows(embedder, source.records(), args.window_rows, "passage", 32))
            elapsed = time.perf_counter() - started
            del embedder
        results["local"].append(tokens / elapsed)
        if _clean(foreign, elapsed, cpus):
            clean["local"].append(tokens / elapsed)
        print(f"round {round_}: local {cpus} threads: {tokens:,} tokens in {elapsed:.1f} s = "
              f"{tokens / elapsed:,.0f} tokens/s{_flag(foreign, elapsed, cpus)}", flush=True)
        for text, plan in plans:
            with ForeignCpu() as foreign:
                started = time.perf_counter()
                got = sum(w.tokens for w in ray_windows(source, 0, args.model, args.variant, "passage",
                                                        args.window_rows, plan=plan, block_bytes=block_bytes))
                elapsed = time.perf_counter() - started
            assert got == tokens, (got, tokens)
            results[text].append(got / elapsed)
            if _clean(foreign, elapsed, cpus):
                clean[text].append(got / elapsed)
            print(f"round {round_}: ray {text} {plan}: {elapsed:.1f} s = {got / elapsed:,.0f} tokens/s"
                  f"{_flag(foreign, elapsed, cpus)}", flush=True)
    for label, runs in (("all runs", results), ("clean runs", clean)):
        if not runs["local"]:
            print(f"median of {label}: no clean in-process run")
            continue
        base = statistics.median(runs["local"])
        for name, values in runs.items():
            if values:
                median = statistics.median(values)
                print(f"median of {label} ({len(values)}), {name}: {median:,.0f} tokens/s ({median / base:.2f}x local)")
    ray.shutdown()


def _clean(foreign, elapsed, cpus):
    return foreign.seconds is None or foreign.seconds / (elapsed * cpus) <= 0.05


def _flag(foreign, elapsed, cpus):
    if foreign.seconds is None:
        return " (other processes' CPU not measured: no psutil)"
    share = foreign.seconds / (elapsed * cpus)
    return f"; other processes used {share:.0%} of the cores" + ("  <-- shared machine, discard" if share > 0.05 else "")


if __name__ == "__main__":
    main()
