"""Regenerate the README's measured tables from the benchmark results on disk — never edit them by hand.

    python benchmarks/readme_tables.py            # rewrite README.md's generated blocks
    python benchmarks/readme_tables.py --check    # exit 1 if README.md differs from what the results give

Each block sits between ``<!-- begin generated: NAME -->`` and ``<!-- end generated: NAME -->`` in README.md
and comes from one results file:

- ``quality``: ``results/all-MiniLM-L6-v2/results.json`` (``e5onnx bench`` on the real MiniLM): STS-B test
  Spearman, mean / min cosine to PyTorch and SciFact nDCG@10 per contender (speed is judged on the e5 shape);
- ``speed``: ``results/e5-small-shaped/results.json`` (``e5onnx bench`` on the e5-small shape): passage
  tokens/s at batch 32 and single-query p50 per contender against fastembed and against the roofline, cold
  start, peak RSS, and the issue's targets (:func:`e5onnx.bench.report.targets`);
- ``server``: ``results/server-e5-small-shaped-int8/results.json`` (``serve_load.py``);
- ``corpus``: ``results/corpus-scifact/results.json`` (``corpus_scifact.py``: one process vs Ray, resume);
- ``family``: ``results/family/results.json`` (``family.py``: the e5 family at its published configs).
- ``windows``: ``results/scifact-windows-minilm/results.json`` (``scifact_windows.py``: truncation vs windows);
- ``compact``: ``results/scifact-compact-minilm/results.json`` (``scifact_compact.py``: each output vector form).

Published scores (MTEB, ``../shared/README.md``): all-MiniLM-L6-v2 STSBenchmark 82.03, SciFact 64.51.
"""

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from e5onnx.bench.report import PEER, targets, vs_roofline  # noqa: E402 - after the path is set
from e5onnx.runtime.atomic import write_text_atomic  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
PUBLISHED = {"stsb": 82.03, "scifact": 64.51}  # MTEB, all-MiniLM-L6-v2 (../shared/data/reference_scores)
BATCH = "32"
BLOCK = re.compile(r"(<!-- begin generated: (\w+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _env(r):
    e = r["environment"]
    return (f"{e['cpu']['model']} ({', '.join(f for f in e['cpu']['flags'] if f.startswith(('avx512_', 'amx')))}"
            f" and AVX2), {e['threads']} threads, onnxruntime {e['versions'].get('onnxruntime')}, {e['date'][:10]}")


def quality(r):
    """Markdown of the MiniLM run: one row per contender."""
    # the run's reference: the PyTorch model when it ran, else its first contender (e5onnx bench --skip torch)
    reference = "PyTorch" if "torch-fp32" in r["passages"] else next(iter(r["passages"]))
    note = "" if reference == "PyTorch" else f" (this run skipped PyTorch: the reference is {reference})"
    lines = [f"Real all-MiniLM-L6-v2, max length 256, one `e5onnx bench` run ({_env(r)}){note}:", "",
             f"| contender | STS-B Spearman ×100 | STS-B mean / min cosine to {reference} | SciFact nDCG@10 ×100 |",
             "|---|---|---|---|"]
    for name in r["passages"]:
        q, s = r["quality"].get(name, {}), r["scifact"].get(name)
        spearman = f"{q['stsb_spearman']:.2f}" if q else "—"
        if name == "torch-fp32" and q:
            spearman += f" (published {PUBLISHED['stsb']})"
        cos = f"{q['mean_cosine_to_reference']:.6f} / {q['min_cosine_to_reference']:.6f}" if q else "—"
        ndcg = f"{s['ndcg_at_10']:.2f}" if s else "—"
        if name == "e5onnx-fp32" and s:
            ndcg += f" (published {PUBLISHED['scifact']})"
        lines.append(f"| {name} | {spearman} | {cos} | {ndcg} |")
    return lines


def speed(r):
    """Markdown of the e5-shape run: contenders against fastembed and the roofline, then the targets."""
    roof, peer = vs_roofline(r), r["passages"].get(PEER, {}).get(BATCH, {}).get("tokens_per_s")
    peer_p50 = r["queries"].get(PEER, {}).get("p50_ms")
    lines = [f"e5-small shape (12 layers, random weights, max 512), {r['workload']}; one `e5onnx bench` run "
             f"({_env(r)}); `auto` picks `{r.get('auto_variant')}` here:", "",
             "| contender | passage tokens/s (batch 32) | × fastembed | % of its GEMM ceiling | query p50 ms | "
             "× fastembed | × compute floor | cold start s | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for name, per_b in r["passages"].items():
        tps, p50 = per_b[BATCH]["tokens_per_s"], r["queries"][name]["p50_ms"]
        f, p = roof.get(name), r["process"].get(name, {})
        cells = [f"{tps:.0f}", f"{tps / peer:.2f}" if peer else "—",
                 f"{100 * f['fraction_of_ceiling'][int(BATCH)]:.0f} % ({f['dtype']})" if f else "—",
                 f"{p50:.2f}", f"{p50 / peer_p50:.2f}" if peer_p50 else "—",
                 f"{f['p50_over_floor']:.1f}" if f and f["p50_over_floor"] is not None else "—",
                 f"{p['cold_start_s']:.2f}" if "cold_start_s" in p else "—",
                 f"{p['peak_rss_mb']:.0f}" if "peak_rss_mb" in p else "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    d = r["roofline"]["dtypes"]
    lines += ["", "Ceilings measured in the same run (onnxruntime GEMMs at e5-small's weight shapes, "
              f"{r['roofline']['macs_per_token'] / 1e6:.1f} M MAC per token): "
              + "; ".join(f"{k} {v['passage']['ceiling_tokens_per_s']:.0f} tokens/s, "
                          f"{r['roofline']['query_m']}-token floor {v['query']['floor_ms']:.2f} ms"
                          for k, v in d.items()) + ".", "",
              "| target | contender | value | bound | met? |", "|---|---|---|---|---|"]
    for t in targets(r):
        lines.append(f"| {t['target']} | {t['contender']} | {t['value']:.2f} | {t['bound']} {t['limit']:g} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    return lines


def server(r):
    """Markdown of ``serve_load.py``'s run."""
    sat, one, conc = r["saturation"], r["single_request"], r["concurrent_32"]
    lines = [f"`benchmarks/serve_load.py`, {r['model']} ({r['variant']}), {_env(r)}:", "",
             "| measure | result | target |", "|---|---|---|",
             f"| saturation, {r['clients']} clients × requests of 32 SciFact passages | "
             f"{sat['server_tokens_per_s']:.0f} tokens/s = {sat['ratio']:.2f}× the in-process Embedder | ≥ 0.95× "
             f"{'✓' if sat['ratio'] >= 0.95 else '✗'} |",
             f"| single-request p50 overhead over in-process (one query) | {one['overhead_ms']:.2f} ms "
             f"({one['server_p50_ms']:.2f} vs {one['in_process_p50_ms']:.2f} ms) | ≤ 0.5 ms "
             f"{'✓' if one['overhead_ms'] <= 0.5 else '✗'} |"]
    if "http_get_p50_ms" in one:
        lines.append(f"| of which the bare HTTP round trip (`GET /v1/models` p50) | {one['http_get_p50_ms']:.2f} ms | |")
    lines.append(f"| 32 concurrent clients, single queries | p50 {conc['p50_ms']:.0f} ms, p99 {conc['p99_ms']:.0f} ms | |")
    if r.get("rss"):
        s, g = r["rss"]["samples"], r["rss"]["growth_after_1000_pct"]
        after = [x for x in s if x["request"] >= 1000]
        if len(after) >= 2:  # growth needs requests after the warm-up of 1,000
            lines.append(f"| server RSS, requests 1,000 → {s[-1]['request']:,} (1–8 texts × 1–128 words) | "
                         f"{after[0]['rss_mb']:.0f} → {s[-1]['rss_mb']:.0f} MB (peak {max(x['rss_mb'] for x in after):.0f}), "
                         f"{g:+.1f} % | flat ≤ 10 % {'✓' if g <= 10 else '✗'} |")
        else:
            lines.append(f"| server RSS growth after request 1,000 | not measured: the run stopped at request "
                         f"{s[-1]['request']:,} | flat ≤ 10 % |")
    return lines


def corpus(r):
    """Markdown of the corpus job's run: the same text ``corpus_scifact.py`` writes to its results.md."""
    sys.path.insert(0, str(HERE))
    from corpus_scifact import markdown

    return markdown(r).rstrip("\n").split("\n")


def _script_markdown(module):
    """The renderer of a benchmark script that writes its own results.md: the README shows the same text."""
    def render(r):
        sys.path.insert(0, str(HERE))
        return __import__(module).markdown(r).rstrip("\n").split("\n")
    return render


SOURCES = {"quality": (RESULTS / "all-MiniLM-L6-v2" / "results.json", quality),
           "speed": (RESULTS / "e5-small-shaped" / "results.json", speed),
           "server": (RESULTS / "server-e5-small-shaped-int8" / "results.json", server),
           "corpus": (RESULTS / "corpus-scifact" / "results.json", corpus),
           "family": (RESULTS / "family" / "results.json", _script_markdown("family")),
           "windows": (RESULTS / "scifact-windows-minilm" / "results.json", _script_markdown("scifact_windows")),
           "compact": (RESULTS / "scifact-compact-minilm" / "results.json", _script_markdown("scifact_compact"))}


def render(text):
    """``text`` with every generated block rebuilt from its results file.

    Raises:
        KeyError: a block names no known source. FileNotFoundError: its results file is missing.
    """
    def block(m):
        path, make = SOURCES[m.group(2)]
        body = "\n".join(make(_load(path))) + "\n"
        return m.group(1) + body + m.group(4)
    return BLOCK.sub(block, text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md is not what the results give")
    args = p.parse_args(argv)
    old = README.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print("README.md's generated tables differ from benchmarks/results/: run benchmarks/readme_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    write_text_atomic(README, new)
    print(f"README.md: {len(BLOCK.findall(new))} generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
