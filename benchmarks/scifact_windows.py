"""Long inputs: SciFact nDCG@10 with ``truncate="windows"`` against truncation, at a max length that most documents
overflow.

    python benchmarks/scifact_windows.py models/all-MiniLM-L6-v2 --max-length 128 \\
        --out benchmarks/results/scifact-windows-minilm

MTEB's SciFact protocol (:mod:`e5onnx.bench.quality`: ``title + " " + text``, cosine over the whole corpus of 5,183
documents, 300 queries, nDCG@10), the fp32 variant, no prefixes (all-MiniLM-L6-v2 has none). The queries are
embedded once (they all fit); the documents once per setting: truncation at ``--max-length``; windows of
``--max-length`` tokens with the overlaps of ``--overlaps`` (the shipped default,
:data:`~e5onnx.config.WINDOW_OVERLAP`, and others, set by rebinding it for the run); and, for reference,
truncation at the folder's own max length (256 for MiniLM, its published protocol). Each setting's document
tokens (every window's: the compute it costs) and wall time are recorded too; the table shows tokens, since wall
times on a shared 2-core machine say more about the neighbours than about the setting.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from e5onnx.bench.quality import ndcg_at_k, read_scifact
from e5onnx.bench.report import save_results
from e5onnx.bench.run import environment
from e5onnx.config import WINDOW_OVERLAP, shared_dir
from e5onnx.runtime import Embedder
from e5onnx.runtime import windows as windows_module


def document_pass(embedder, docs, truncate, overlap=None):
    """``(vectors, tokens, seconds)`` of the documents; ``overlap`` rebinds the windows' overlap for this pass."""
    old = windows_module.WINDOW_OVERLAP
    windows_module.WINDOW_OVERLAP = WINDOW_OVERLAP if overlap is None else overlap
    try:
        tokens = sum(embedder.prepare(docs[i:i + 512], None, truncate).tokens for i in range(0, len(docs), 512))
        started = time.perf_counter()
        vectors = embedder.embed(docs, truncate=truncate)
        return vectors, tokens, time.perf_counter() - started
    finally:
        windows_module.WINDOW_OVERLAP = old


def token_lengths(tokenizer_json, texts):
    """``(n,)`` tokens of each text untruncated, special tokens included."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    return np.array([len(e.ids) for e in tok.encode_batch(texts)])


def run(model, max_length, overlaps, data, threads):
    doc_ids, docs, query_ids, queries, qrels = read_scifact(data)
    short = Embedder.load(model, variant="fp32", threads=threads, max_length=max_length)
    full = Embedder.load(model, variant="fp32", threads=threads)
    lengths = token_lengths(Path(model) / "tokenizer.json", docs)
    q = short.embed(queries)
    assert short.prepare(queries, None, False).errors == (), "a query is over max length"
    settings = [(f"truncation at {max_length}", short, True, None)]
    settings += [(f"windows of {max_length}, overlap {o:g}", short, "windows", o) for o in overlaps]
    settings.append((f"truncation at {full.max_length} (the folder's max length)", full, True, None))
    rows = []
    for name, embedder, truncate, overlap in settings:
        vectors, tokens, seconds = document_pass(embedder, docs, truncate, overlap)
        queries_here = q if embedder is short else embedder.embed(queries)
        ndcg = ndcg_at_k(queries_here @ vectors.T, doc_ids, query_ids, qrels)
        rows.append({"setting": name, "max_length": embedder.max_length, "truncate": truncate, "overlap": overlap,
                     "default": overlap == WINDOW_OVERLAP, "ndcg_at_10": ndcg, "document_tokens": tokens,
                     "seconds": seconds})
        print(f"{name}: nDCG@10 {ndcg:.2f}, {tokens:,} tokens, {seconds:.0f} s", flush=True)
    return {"model": str(model), "source": full.manifest.source.id, "variant": "fp32", "max_length": max_length,
            "documents": len(docs),
            "queries": len(queries), "overflowing": int((lengths > max_length).sum()),
            "document_tokens_median": float(np.median(lengths)), "document_tokens_p90": float(np.percentile(lengths, 90)),
            "document_tokens_max": int(lengths.max()), "runs": rows, "environment": environment(threads)}


def markdown(r):
    """The README table of a run (``benchmarks/readme_tables.py`` renders the same)."""
    env = r["environment"]
    base = r["runs"][0]["ndcg_at_10"]
    lines = [f"`benchmarks/scifact_windows.py`, SciFact test ({r['documents']:,} documents, {r['queries']} queries, "
             f"MTEB protocol), {Path(r.get('source') or r['model']).name} fp32, max length {r['max_length']}: "
             f"{r['overflowing']:,} documents ({r['overflowing'] / r['documents']:.0%}) are longer (document tokens "
             f"median {r['document_tokens_median']:.0f}, p90 {r['document_tokens_p90']:.0f}, max "
             f"{r['document_tokens_max']:,}); {env['cpu']['model']}, {env['threads']} threads, {env['date'][:10]}:",
             "", f"| documents embedded as | nDCG@10 ×100 | vs truncation at {r['max_length']} | document tokens run "
             "(compute) |", "|---|---|---|---|"]
    for row in r["runs"]:
        name = row["setting"] + (" (default)" if row["default"] else "")
        lines.append(f"| {name} | {row['ndcg_at_10']:.2f} | {row['ndcg_at_10'] - base:+.2f} | "
                     f"{row['document_tokens']:,} ({row['document_tokens'] / r['runs'][0]['document_tokens']:.1f}×) |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="exported model folder (fp32 variant)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--overlaps", type=float, nargs="+", default=[0.0, WINDOW_OVERLAP, 0.5])
    p.add_argument("--data", default=str(shared_dir() / "data" / "scifact"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = run(args.model, args.max_length, args.overlaps, args.data, args.threads)
    print(save_results(args.out, result, markdown))


if __name__ == "__main__":
    main()
