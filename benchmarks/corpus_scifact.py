"""The corpus job end to end on the whole SciFact corpus (5,183 documents): one process vs Ray on the same cores,
and the cost of a kill + resume.

    python benchmarks/corpus_scifact.py models/main --variant int8 --out benchmarks/results/corpus-scifact

Each run is ``e5onnx corpus`` as a user types it (a subprocess; ``title + " " + text``, ``passage: ``), timed from
start to exit, peak RSS summed over its whole process tree (Ray's raylet, GCS and workers included: they are
children of a local ``ray.init``), sampled every 0.2 s. Single-process and Ray runs alternate, ``--repeats``
each; medians. The resume run is killed (SIGKILL) once half of its shards are written, then resumed; its cost is
(killed wall + resume wall) - the uninterrupted median. The int8 GEMM ceiling of this model's shape is measured
in the same run (:mod:`e5onnx.bench.roofline`), and tokens/s stated as a fraction of it.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from e5onnx.bench.report import save_results
from e5onnx.bench.roofline import measure, shape_from_config
from e5onnx.bench.run import environment
from e5onnx.config import CORPUS_PARTIAL_SUFFIX, CORPUS_RUN_FILE, shared_dir

#: Issue 11's target: Ray tokens/s over single-process tokens/s on the same 2 cores.
RAY_TARGET = 0.9


def command(model, variant, parts, out, threads, extra=()):
    """``e5onnx corpus`` as a user types it. One process gets ``--threads threads``; with ``--ray`` in ``extra``
    no ``--threads`` is passed (there it means threads *per actor*): the local Ray gets the machine's CPUs and
    the default actor plan runs one single-threaded actor per CPU, so both sides run as many compute threads."""
    threads = [] if "--ray" in extra else ["--threads", str(threads)]
    return [sys.executable, "-m", "e5onnx.cli", "corpus", model, "--input", *map(str, parts), "--output", str(out),
            "--id-field", "_id", "--title-field", "title", "--variant", variant, *threads, "--quiet", *extra]


def timed(cmd, stop_when=None):
    """``(wall s, peak tree RSS MB, exit status)`` of ``cmd``; ``stop_when()`` true kills it with SIGKILL."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if stop_when is not None and stop_when():
            os.kill(proc.pid, signal.SIGKILL)
            for child in tree[1:]:
                try:
                    child.kill()
                except psutil.Error:
                    pass
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]}")
    return time.perf_counter() - t0, peak / 2**20, proc.returncode


def reader_seconds(parts, repeats=3):
    """Fastest of ``repeats`` full passes of the job's reader over ``parts`` (parse, title + text, ids), s."""
    from e5onnx.corpus.sources import open_source

    source = open_source([str(p) for p in parts], "jsonl", "text", "title", "_id")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        count = sum(1 for _ in source.records())
        best = min(best, time.perf_counter() - t0)
    return best, count


def run_manifest(out):
    return json.loads((Path(out) / CORPUS_RUN_FILE).read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--variant", default="int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--resume-shard-rows", type=int, default=500)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    scifact = shared_dir() / "data" / "scifact"
    parts = sorted(scifact.glob("corpus.part*.jsonl"))
    if not parts:
        sys.exit(f"no SciFact corpus under {scifact}")
    work = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    runs = {"single": [], "ray": []}
    for r in range(args.repeats):
        for side in (("single", "ray") if r % 2 == 0 else ("ray", "single")):
            out = work / f"{side}-{r}"
            wall, rss, _ = timed(command(args.model, args.variant, parts, out, args.threads,
                                         ["--ray"] if side == "ray" else []))
            m = run_manifest(out)
            runs[side].append({"wall_s": round(wall, 2), "peak_rss_mb": round(rss, 1), "tokens": m["tokens"],
                               "rows": m["rows_written"], "job_tokens_per_s": m["tokens_per_s"],
                               "tokens_per_s": round(m["tokens"] / wall, 1)})
            print(side, runs[side][-1], flush=True)
    summary = {side: {k: statistics.median(x[k] for x in v) for k in v[0]} for side, v in runs.items()}
    resume = resume_cost(args, parts, work, summary["single"]["wall_s"])
    read_s, read_rows = reader_seconds(parts)
    shape = shape_from_config(args.model)
    roof = measure(args.threads, shape["hidden"], shape["intermediate"], shape["layers"], bf16=False)
    ceiling = roof["dtypes"]["int8"]["passage"]["ceiling_tokens_per_s"]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": args.model,
              "variant": args.variant, "threads": args.threads, "documents": summary["single"]["rows"],
              "runs": runs, "median": summary, "ray_over_single": round(summary["ray"]["tokens_per_s"]
                                                                        / summary["single"]["tokens_per_s"], 3),
              "ray_target": RAY_TARGET, "resume": resume, "int8_ceiling_tokens_per_s": round(ceiling, 1),
              "reader": {"seconds": round(read_s, 4), "rows": read_rows}, "dim": shape["hidden"],
              "environment": environment(args.threads)}
    print(save_results(args.out, result, markdown))


def resume_cost(args, parts, work, uninterrupted_s):
    out = work / "resumed"
    manifest = out.with_name(out.name + CORPUS_PARTIAL_SUFFIX) / CORPUS_RUN_FILE
    shards = -(-5183 // args.resume_shard_rows)
    extra = ["--shard-rows", str(args.resume_shard_rows)]

    def half_done():
        try:
            return len(json.loads(manifest.read_text())["shards"]) >= shards // 2
        except (OSError, ValueError):
            return False
    killed_s, _, code = timed(command(args.model, args.variant, parts, out, args.threads, extra), half_done)
    done = len(json.loads(manifest.read_text())["shards"])
    resumed_s, _, _ = timed(command(args.model, args.variant, parts, out, args.threads, extra + ["--resume"]))
    m = run_manifest(out)
    return {"shard_rows": args.resume_shard_rows, "shards_done_when_killed": done, "killed_after_s": round(killed_s, 2),
            "killed_by_sigkill": code == -signal.SIGKILL, "resume_wall_s": round(resumed_s, 2),
            "rows": m["rows_written"], "lost_s": round(killed_s + resumed_s - uninterrupted_s, 2)}


def _spread(runs):
    walls = [x["wall_s"] for x in runs]
    return f"{min(walls):.1f}" if len(walls) == 1 else f"{min(walls):.1f} to {max(walls):.1f}"


def markdown(r):
    s, y, res = r["median"]["single"], r["median"]["ray"], r["resume"]
    cpu = r["environment"]["cpu"]
    flags = ", ".join(f for f in cpu["flags"] if "vnni" in f or "bf16" in f)
    lines = [
        (f"`benchmarks/corpus_scifact.py`, SciFact corpus ({int(r['documents']):,} documents, `title + \" \" + text`, "
         f"`passage: `), {r['model']} ({r['variant']}), {r['threads']} compute threads on each side (one process: "
         f"one {r['threads']}-thread session; Ray: {r['threads']} single-threaded actors, the default actor plan), "
         f"{cpu['model']} ({flags}), "
         f"{r['date'][:10]}; medians of {len(r['runs']['single'])} alternating runs each:"),
        "",
        "| run | wall s | tokens/s | of the int8 GEMM ceiling | peak RSS (process tree) |",
        "|---|---|---|---|---|",
        (f"| one process (`e5onnx corpus`) | {s['wall_s']:.1f} | {s['tokens_per_s']:,.0f} | "
         f"{s['tokens_per_s'] / r['int8_ceiling_tokens_per_s']:.0%} | {s['peak_rss_mb']:,.0f} MB |"),
        (f"| Ray, local cluster (`--ray`) | {y['wall_s']:.1f} | {y['tokens_per_s']:,.0f} | "
         f"{y['tokens_per_s'] / r['int8_ceiling_tokens_per_s']:.0%} | {y['peak_rss_mb']:,.0f} MB |"),
        "",
        (f"Ray / one process: **{r['ray_over_single']:.2f}×** tokens/s (target ≥ {r['ray_target']}). Tokens/s are "
         f"the job's real tokens over the command's whole wall time (model load, Ray start-up included); int8 GEMM "
         f"ceiling of this shape measured in the same run: {r['int8_ceiling_tokens_per_s']:,.0f} tokens/s."),
        "",
        (f"Kill and resume (`--shard-rows {res['shard_rows']}`): SIGKILL after {res['killed_after_s']:.1f} s with "
         f"{res['shards_done_when_killed']} shards written; `--resume` finished in {res['resume_wall_s']:.1f} s, "
         f"{res['rows']:,} rows; time lost to the kill {res['lost_s']:.1f} s (killed + resumed - uninterrupted "
         f"median; the uninterrupted one-process runs took {_spread(r['runs']['single'])} s)."),
    ]
    if "reader" in r:
        lines += ["", scaling(r)]
    return "\n".join(lines) + "\n"


def scaling(r):
    """The paper scaling paragraph's measured figures: one node's documents/s on Ray, the single reader's
    documents/s, how many such nodes it would feed, and the vector bytes/s per node into the driver."""
    node_docs = r["documents"] / r["median"]["ray"]["wall_s"]
    read_docs = r["reader"]["rows"] / r["reader"]["seconds"]
    vector_kb = node_docs * r["dim"] * 4 / 1000
    return (f"For scaling: one {r['threads']}-CPU node on Ray embedded {node_docs:,.0f} documents/s "
            f"({r['median']['ray']['tokens_per_s']:,.0f} tokens/s); the job's single reader parses "
            f"{read_docs:,.0f} documents/s (the {r['reader']['rows']:,} documents in {r['reader']['seconds']:.3f} s), "
            f"enough for about {read_docs / node_docs:,.0f} such nodes; each node sends the driver "
            f"{vector_kb:,.0f} KB/s of {r['dim']}-dim float32 vectors.")


if __name__ == "__main__":
    main()
