"""Benchmark outputs beyond the raw tables: the roofline comparison, the targets, and the PNG plot.

Targets, each judged on one run (e5-small shape, 2 threads):

- against the peer, fastembed fp32 on the same ONNX: best variant built under a quality gate ≥ 3× passage
  tokens/s and single-query p50 ≤ 0.4×; best INT8 ≥ 1.8×; fp32 e5onnx ≥ 1.1×;
- against this machine's limits: INT8 passage tokens/s at batch 32 ≥ 60 % of the int8 GEMM ceiling
  (:mod:`e5onnx.bench.roofline`); single-query p50 of the variant ``auto`` picks, and of int8, ≤ 2× its
  compute floor and ≤ 0.35× fastembed fp32;
- for a service: a mixed call (31 queries + one ~420-token passage) ≤ 1.1× its two parts embedded separately;
  int8 peak RSS ≤ 150 MB; cold start ≤ 0.4 s.

The ``from`` column of the table says which of the three a target is (:data:`KINDS`).
"""

from pathlib import Path

from ..config import BENCH_TARGET_BATCH
from ..runtime.atomic import write_json_atomic, write_text_atomic
from .roofline import dtype_of

PEER = "fastembed-fp32"
GATED = ("e5onnx-bf16", "e5onnx-int8")  # variants built/checked under a quality gate at export
#: What a target is measured against, as the report's ``from`` column says it.
KINDS = {"peer": "vs the peer (fastembed)", "limit": "vs this CPU's limit", "service": "service goal"}


def save_results(out, result, markdown):
    """Write a benchmark's ``result`` (a JSON-able dict) to ``OUT/results.json`` and its table ``markdown(result)``
    (str) to ``OUT/results.md``, each atomically (a killed run leaves the previous files whole); creates ``out``.

    Returns:
        str: the markdown written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", text)
    return text


def _at(per_batch, batch):
    """The row of ``batch`` in ``{batch size: row}`` (int keys in memory, str keys after JSON), else the largest."""
    rows = {int(k): v for k, v in per_batch.items()}
    return rows.get(int(batch), rows[max(rows)])


def _best(result, names, batch):
    rows = {n: _at(result["passages"][n], batch)["tokens_per_s"] for n in names if n in result["passages"]}
    return max(rows.items(), key=lambda kv: kv[1]) if rows else (None, None)


def _target_batch(result, batch):
    """``batch`` if every contender was measured at it, else the largest measured (``--quick``: 1 and 8)."""
    measured = {int(k) for k in next(iter(result["passages"].values()))}
    return batch if batch in measured else max(measured)


def vs_roofline(result):
    """Each contender against its dtype's ceiling and floor (:mod:`e5onnx.bench.roofline`).

    Returns:
        ``{name: {"dtype", "ceiling_tokens_per_s", "fraction_of_ceiling": {batch: passage tokens/s / ceiling},
        "query_tokens", "floor_ms", "p50_over_floor"}}``; a contender whose dtype has no roofline (bf16
        without OpenVINO) is left out. Empty when the run has no roofline.
    """
    roof = result.get("roofline")
    if not roof:
        return {}
    out = {}
    for name, per_b in result["passages"].items():
        entry = roof["dtypes"].get(dtype_of(name))
        if entry is None:
            continue
        ceiling, floor = entry["passage"]["ceiling_tokens_per_s"], entry["query"]["floor_ms"]
        p50 = result["queries"].get(name, {}).get("p50_ms")
        out[name] = {"dtype": dtype_of(name), "ceiling_tokens_per_s": ceiling,
                     "fraction_of_ceiling": {int(b): r["tokens_per_s"] / ceiling for b, r in per_b.items()},
                     "query_tokens": roof["query_m"], "floor_ms": floor,
                     "p50_over_floor": p50 / floor if p50 is not None else None}
    return out


def targets(result, batch=BENCH_TARGET_BATCH):
    """``[{"target", "contender", "value", "limit", "met", "margin", "source"}]``.

    ``margin`` is how far inside the bound the value is (negative: missed by that much; see :func:`_row`).
    Rows whose measurement is absent from the run are left out; the fastembed ratios need fastembed in the run.
    """
    batch = _target_batch(result, batch)
    rows = []

    def add(target, contender, value, limit, higher=True, source="limit"):
        if contender is not None and value is not None:
            rows.append(_row(target, contender, value, limit, higher, source))

    peer_tps = _at(result["passages"][PEER], batch)["tokens_per_s"] if PEER in result["passages"] else None
    peer_p50 = result["queries"][PEER]["p50_ms"] if PEER in result["queries"] else None
    if peer_tps:
        name, tps = _best(result, GATED, batch)
        add(f"best gated variant: passage tokens/s vs fastembed (batch {batch})", name, tps and tps / peer_tps, 3.0,
            source="peer")
        if name:
            add("best gated variant: single-query p50 vs fastembed", name,
                result["queries"][name]["p50_ms"] / peer_p50, 0.4, higher=False, source="peer")
        name, tps = _best(result, ("e5onnx-int8",), batch)
        add(f"int8: passage tokens/s vs fastembed (batch {batch})", name, tps and tps / peer_tps, 1.8, source="peer")
        name, tps = _best(result, ("e5onnx-fp32",), batch)
        add(f"fp32: passage tokens/s vs fastembed (batch {batch})", name, tps and tps / peer_tps, 1.1, source="peer")
    roof = vs_roofline(result)  # recomputed: int batch keys also for a result read back from JSON
    if "e5onnx-int8" in roof:
        add(f"int8: passage tokens/s as a fraction of the int8 ceiling (batch {batch})", "e5onnx-int8",
            roof["e5onnx-int8"]["fraction_of_ceiling"].get(batch), 0.60)
    auto = result.get("auto_variant")
    latency = [f"e5onnx-{auto}"] if auto else []
    latency += [n for n in ("e5onnx-int8",) if n not in latency]
    for name in latency:
        label = f"{name} (auto)" if auto and name == f"e5onnx-{auto}" else name
        if name in roof:
            add(f"single-query p50 / compute floor ({roof[name]['query_tokens']} tokens)", label,
                roof[name]["p50_over_floor"], 2.0, higher=False)
        if peer_p50 and name in result["queries"]:
            add("single-query p50 vs fastembed", label, result["queries"][name]["p50_ms"] / peer_p50, 0.35,
                higher=False, source="peer")
    for name, m in (result.get("mixed") or {}).items():
        add(f"mixed call ({m['texts'] - 1} queries + 1 long passage) / its parts", name, m["ratio"], 1.1, higher=False,
            source="service")
    for name, p in result["process"].items():
        if name.startswith("e5onnx"):
            add("cold start s (new process to first embedding)", name, p.get("cold_start_s"), 0.4, higher=False,
                source="service")
    if "e5onnx-int8" in result["process"]:
        add("peak RSS MB with int8", "e5onnx-int8", result["process"]["e5onnx-int8"].get("peak_rss_mb"), 150,
            higher=False, source="service")
    return rows


def _row(target, contender, value, limit, higher, source):
    """One target row; ``margin`` = ``value - limit`` for a lower bound, ``limit - value`` for an upper bound
    (positive: met by that much; negative: missed by that much), in the target's unit."""
    margin = value - limit if higher else limit - value
    return {"target": target, "contender": contender, "value": value, "limit": limit,
            "bound": ">=" if higher else "<=", "met": margin >= 0, "margin": margin, "source": source}


def roofline_markdown(result):
    """Markdown lines: the GEMM rates per shape and dtype, and each contender against its ceiling and floor."""
    roof = result.get("roofline")
    if not roof:
        return []
    s = roof["shape"]
    lines = ["", f"## Roofline: GEMM rates at the model's weight shapes ({roof['threads']} threads, same run)", "",
             f"Weight MatMuls per layer (hidden {s['hidden']}, intermediate {s['intermediate']}): "
             f"4 × ({s['hidden']}×{s['hidden']}), ({s['hidden']}×{s['intermediate']}), "
             f"({s['intermediate']}×{s['hidden']}); {s['layers']} layers = {roof['macs_per_token'] / 1e6:.2f} M MAC "
             "per token (embeddings and attention score/value products excluded). Ceiling tokens/s = 1 / "
             "(layers × Σ K·N / rate), time-weighted; floor of an n-token query = n / ceiling at M = n. "
             f"Passage pass M = {roof['passage_m']} tokens, query M = {roof['query_m']} tokens (median query length).",
             "", "| dtype | op | M | attention G MAC/s | ffn_in G MAC/s | ffn_out G MAC/s | ceiling tokens/s | "
             "floor ms |", "|---|---|---|---|---|---|---|---|"]
    chosen = roof["dtypes"]["int8"]["op"]
    entries = [("int8 (ceiling)", roof["dtypes"]["int8"])]
    entries += [("int8", e) for op, e in roof.get("int8_ops", {}).items() if op != chosen]
    entries += [(d, e) for d, e in roof["dtypes"].items() if d != "int8"]
    for dtype, e in entries:
        for where, m in (("passage", roof["passage_m"]), ("query", roof["query_m"])):
            r, floor = e[where]["rates_gmacs"], e[where].get("floor_ms")
            lines.append(f"| {dtype} | {e['op']} | {m} | {r['attention']:.0f} | {r['ffn_in']:.0f} | {r['ffn_out']:.0f} | "
                         f"{e[where]['ceiling_tokens_per_s']:.0f} | {f'{floor:.2f}' if floor else '-'} |")
    lines += [f"- {n}" for n in roof.get("notes", [])]
    fractions = vs_roofline(result)
    if fractions:
        batches = sorted(next(iter(fractions.values()))["fraction_of_ceiling"])
        lines += ["", "Each contender against its dtype's ceiling (passage tokens/s ÷ ceiling) and floor "
                  "(single-query p50 ÷ floor):", "",
                  "| contender | dtype | " + " | ".join(f"batch {b}" for b in batches) + " | query p50 ÷ floor |",
                  "|---" * (len(batches) + 3) + "|"]
        for name, f in fractions.items():
            cells = " | ".join(f"{100 * f['fraction_of_ceiling'][b]:.0f} %" for b in batches)
            over = f"{f['p50_over_floor']:.1f}×" if f["p50_over_floor"] is not None else "-"
            lines.append(f"| {name} | {f['dtype']} | {cells} | {over} |")
        if any(v > 1 for f in fractions.values() for v in f["fraction_of_ceiling"].values()) or any(
                f["p50_over_floor"] is not None and f["p50_over_floor"] < 1 for f in fractions.values()):
            lines += ["", "A contender over 100 % of its ceiling (or under 1× its floor) ran faster than the bare "
                      "GEMMs were measured: the machine was busier while the roofline was measured, or (bf16 "
                      "emulated in f32) the ceiling's kernel is not the one the contender uses. Such a run's "
                      "ratios are not figures to quote."]
    return lines


def mixed_markdown(result):
    """Markdown lines of the mixed-call measurement (one call vs its two parts), or none."""
    mixed = result.get("mixed")
    if not mixed:
        return []
    m0 = next(iter(mixed.values()))
    lines = ["", f"## Mixed call: {m0['texts'] - 1} queries + one {result.get('mixed_passage_tokens', '?')}-token "
             f"passage in one embed vs the two parts ({m0['repeats']} interleaved repeats, medians)", "",
             "| contender | one call ms | parts ms | ratio |", "|---|---|---|---|"]
    for name, m in mixed.items():
        lines.append(f"| {name} | {m['mixed_ms']:.1f} | {m['parts_ms']:.1f} | {m['ratio']:.2f} |")
    return lines


def targets_markdown(result):
    """Markdown lines of :func:`targets`: value, bound, met or missed and by how much."""
    rows = targets(result)
    if not rows:
        return []
    lines = ["", "## Targets", "",
             "Ratios and limits measured in this run; margin: how far inside (met) or outside (missed) the bound.",
             "", "| target | contender | value | bound | met? | margin | from |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "yes" if r["met"] else "**no**"
        margin = f"{'+' if r['margin'] >= 0 else '−'}{abs(r['margin']):.2f}"
        lines.append(f"| {r['target']} | {r['contender']} | {r['value']:.2f} | {r['bound']} {r['limit']:g} | {verdict} | "
                     f"{margin} | {KINDS[r['source']]} |")
    return lines


def plot(result, path, batch=32):
    """Write a PNG: passage tokens/s (batch ``batch``) against ``1 - min cosine`` to the PyTorch reference
    (log scale, 1e-8 floor), per contender.

    Quality is the STS-B min cosine when the run has it, else the agreement run's min cosine.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = result.get("quality") or {}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, (name, per_b) in enumerate(result["passages"].items()):
        x = _at(per_b, batch)["tokens_per_s"]
        q = quality.get(name, {}).get("min_cosine_to_reference", result["agreement"].get(name, {}).get("min_cosine"))
        if q is None:
            continue
        y = max(1.0 - q, 1e-8)  # distance from identical output; floor for exact matches
        ax.scatter([x], [y], s=60)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6 if i % 2 else -12), fontsize=8)
    ax.set_yscale("log")
    ax.invert_yaxis()  # better quality higher up
    ax.set_xlabel(f"passage tokens/s (batch {batch}, {result['environment']['threads']} threads, higher is faster)")
    ax.set_ylabel("1 - min cosine to PyTorch fp32" + (" (STS-B test)" if quality else " (agreement texts)"))
    ax.set_title(f"{result.get('label') or result['model']}: throughput vs quality", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
