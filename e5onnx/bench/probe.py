"""Cold start and peak memory of one contender, measured in a fresh process.

The parent (:func:`cold_start_and_rss`) starts ``python -m e5onnx.bench.probe SPEC_JSON TEXTS_FILE``; the
child imports, builds the contender, embeds one query and prints ``READY`` — the parent's clock from just
before the process start to that line is the cold start (s). The child then embeds the texts in batches of
32 and prints its peak resident set size (:func:`peak_rss_mb`).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def cold_start_and_rss(spec, texts, timeout=600):
    """``{"cold_start_s", "peak_rss_mb"}`` of the contender ``spec`` (see :func:`~e5onnx.bench.contenders.specs`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(texts, f)  # a file: one argv string may not exceed 128 KiB on Linux
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "e5onnx.bench.probe", json.dumps(spec), f.name],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        cold = time.perf_counter() - t0
        if line.strip() != "READY":
            raise RuntimeError(f"probe of {spec['kind']} failed before its first embedding")
        result = json.loads(proc.stdout.readline())
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.unlink(f.name)
    return {"cold_start_s": cold, "peak_rss_mb": result["peak_rss_mb"]}


def _child(spec_json, texts_file):
    from .contenders import build

    contender = build(json.loads(spec_json))
    contender.embed(["query: how much protein should a female eat"])
    print("READY", flush=True)
    with open(texts_file, encoding="utf-8") as f:
        texts = json.load(f)
    for i in range(0, len(texts), 32):
        contender.embed(texts[i:i + 32])
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)


def peak_rss_mb():
    """This process's peak resident set size in MB (2^20 bytes).

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would carry over the
    high-water mark of the parent that forked us (a benchmark parent with torch loaded: 1.5 GB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
