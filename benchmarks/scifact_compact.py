"""Compact output vectors: SciFact nDCG@10 of each form, and the bytes a vector takes.

    python benchmarks/scifact_compact.py models/all-MiniLM-L6-v2 --out benchmarks/results/scifact-compact-minilm

MTEB's SciFact protocol (:mod:`e5onnx.bench.quality`), the fp32 variant at the folder's max length (256 for
MiniLM, its published protocol). The documents and queries are embedded once, in float32; every compact form is
derived from those same vectors with the model's fixed ranges (:meth:`Embedder.quantize`, byte for byte what
``embed(..., output=...)`` and the server return). Retrieval is exact (every query against every document) and
follows sentence-transformers' ``semantic_search_faiss`` / ``semantic_search_usearch`` (``sentence_transformers.util
.quantization``):

- float: cosine (dot product of unit vectors);
- int8: dot product of the int8 query and int8 documents (usearch ``ip`` on ``i8``); uint8: the same on uint8
  (faiss ``IndexFlatIP``);
- binary / ubinary: Hamming distance between the packed query and documents; then, as sentence-transformers'
  rescoring, the ``rescore_multiplier x 10`` nearest by Hamming are re-ranked by the dot product of the float
  query with each candidate's bits (0/1), for multipliers 2 (sentence-transformers' default) and 4. The bits
  are the vector's sign bits for both forms (binary bytes are ``ubinary - 128``). sentence-transformers'
  ``semantic_search_usearch`` unpacks a *binary* corpus's int8 bytes as they are (``astype(np.uint8)``), so its
  rescoring sees the most significant bit of every byte inverted; this benchmark rescores with the true bits, and
  shows that quirk's effect in one row of its own;
- for comparison, int8 with the ranges taken from the SciFact corpus vectors themselves (sentence-transformers'
  ``calibration_embeddings``), instead of the model's fixed ones.

Ties (many under Hamming) are broken by document order, as :func:`~e5onnx.bench.quality.ndcg_at_k` does.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from e5onnx.bench.quality import ndcg_at_k, read_scifact
from e5onnx.bench.report import save_results
from e5onnx.bench.run import environment
from e5onnx.config import shared_dir
from e5onnx.runtime import Embedder
from e5onnx.runtime.vectors import quantize, vector_bytes

K = 10
MULTIPLIERS = (2, 4)


def hamming(queries, docs):
    """``(nq, nd)`` Hamming distances between packed bit rows (uint8 or int8 bytes)."""
    q, d = queries.view(np.uint8), docs.view(np.uint8)
    return np.stack([np.bitwise_count(row ^ d).sum(axis=1, dtype=np.int32) for row in q])


def sign_bits(packed):
    """``(n, 8 x bytes)`` uint8 0/1: the bits of ubinary bytes, or of binary ones (``ubinary - 128``, undone)."""
    packed = packed.view(np.uint8) ^ np.uint8(0x80) if packed.dtype == np.int8 else packed
    return np.unpackbits(packed, axis=1)


def rescored(distances, float_queries, packed_docs, multiplier, bits=None):
    """Scores where only the ``multiplier x K`` nearest documents by Hamming count: the float query's dot product
    with each candidate's bits (0/1; default their sign bits); every other document ``-inf``."""
    scores = np.full(distances.shape, -np.inf)
    bits = (sign_bits(packed_docs) if bits is None else bits)[:, :float_queries.shape[1]].astype(np.float32)
    for i, row in enumerate(distances):
        candidates = np.argsort(row, kind="stable")[:multiplier * K]
        scores[i, candidates] = bits[candidates] @ float_queries[i]
    return scores


def run(model, data, threads):
    doc_ids, docs, query_ids, queries, qrels = read_scifact(data)
    e = Embedder.load(model, variant="fp32", threads=threads)
    started = time.perf_counter()
    d, q = e.embed(docs), e.embed(queries)
    seconds = time.perf_counter() - started

    def ndcg(scores):
        return ndcg_at_k(scores, doc_ids, query_ids, qrels)

    rows = [("float", "cosine", ndcg(q @ d.T))]
    for form in ("int8", "uint8"):
        qq, dq = e.quantize(q, form).astype(np.int32), e.quantize(d, form).astype(np.int32)
        rows.append((form, "dot product", ndcg(qq @ dq.T)))
    for form in ("binary", "ubinary"):
        qb, db = e.quantize(q, form), e.quantize(d, form)
        distances = hamming(qb, db)
        rows.append((form, "Hamming", ndcg(-distances)))
        for m in MULTIPLIERS:
            rows.append((form, f"Hamming, then rescored ×{m}", ndcg(rescored(distances, q, db, m))))
        if form == "binary":  # sentence-transformers' usearch rescoring unpacks the offset bytes as they are
            raw = np.unpackbits(db.astype(np.uint8), axis=1)
            rows.append((form, "Hamming, then rescored ×2 as sentence-transformers' usearch path does (bytes "
                               "unpacked with their -128 offset)", ndcg(rescored(distances, q, db, 2, raw))))
    own = np.vstack([d.min(axis=0), d.max(axis=0)]).astype(np.float32)
    qo, do = quantize(q, "int8", own).astype(np.int32), quantize(d, "int8", own).astype(np.int32)
    rows.append(("int8", "dot product, ranges from the SciFact corpus itself", ndcg(qo @ do.T)))
    out = [{"form": f, "scoring": s, "ndcg_at_10": v, "bytes_per_vector": vector_bytes(e.dim, f)} for f, s, v in rows]
    for row in out:
        print(f"{row['form']:8} {row['scoring']:50} {row['ndcg_at_10']:.2f} {row['bytes_per_vector']} B", flush=True)
    return {"model": str(model), "source": e.manifest.source.id, "variant": "fp32", "max_length": e.max_length,
            "dim": e.dim, "documents": len(docs),
            "queries": len(queries), "embed_seconds": seconds, "ranges": {k: v for k, v in e.manifest.embedding_ranges
                                                                          .items() if k not in ("min", "max")},
            "forms": out, "environment": environment(threads)}


def markdown(r):
    """The README table of a run (``benchmarks/readme_tables.py`` renders the same)."""
    env, base = r["environment"], r["forms"][0]
    lines = [f"`benchmarks/scifact_compact.py`, SciFact test ({r['documents']:,} documents, {r['queries']} queries, "
             f"MTEB protocol, exact search), {Path(r.get('source') or r['model']).name} fp32, max length {r['max_length']}, "
             f"{r['dim']} dims; int8/uint8 ranges: the model's fixed ones ({r['ranges']['texts']} built-in "
             f"calibration texts) unless said; {env['cpu']['model']}, {env['date'][:10]}:", "",
             "| form | scoring | nDCG@10 ×100 | of float | bytes per vector |", "|---|---|---|---|---|"]
    for row in r["forms"]:
        lines.append(f"| {row['form']} | {row['scoring']} | {row['ndcg_at_10']:.2f} | "
                     f"{row['ndcg_at_10'] / base['ndcg_at_10']:.1%} | {row['bytes_per_vector']:,} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="exported model folder (fp32 variant; its manifest records embedding_ranges)")
    p.add_argument("--data", default=str(shared_dir() / "data" / "scifact"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = run(args.model, args.data, args.threads)
    print(save_results(args.out, result, markdown))


if __name__ == "__main__":
    main()
