"""Quality on public benchmarks, with MTEB's protocol: STS-B test Spearman and SciFact nDCG@10.

Sources: MTEB (https://github.com/embeddings-benchmark/mteb) — STSBenchmark: Spearman correlation of the
cosine similarity of the two sentence embeddings with the gold score; SciFact (BEIR): document text is
``title + " " + text``, cosine ranking over the whole corpus, nDCG@10 with the qrels' graded relevance
(binary for SciFact), ``DCG = sum(rel_i / log2(i + 1))`` over ranks ``i = 1..10`` (Järvelin & Kekäläinen,
2002, as computed by pytrec_eval). Scores are reported ×100, as MTEB's leaderboard shows them.

Every function takes ``embed`` callables ``list[str] -> (n, dim) float32`` of unit vectors, so the
PyTorch reference, fastembed and every e5onnx variant are scored by the same code.
"""

import csv
import json
from pathlib import Path

import numpy as np


def read_stsb(path):
    """STS-B pairs from a TAB-separated file with header ``genre score sentence1 sentence2`` (no quoting).

    Returns:
        ``(sentences1, sentences2, gold)``: two lists of str and a ``(n,)`` float64 array of scores 0-5.
    """
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return ([r["sentence1"] for r in rows], [r["sentence2"] for r in rows],
            np.array([float(r["score"]) for r in rows]))


def stsb_spearman(embed, path, prefix=""):
    """Spearman ×100 of cosine(embed(s1), embed(s2)) against the gold scores.

    Args:
        embed: ``list[str] -> (n, dim)`` unit vectors.
        path: ``sts-test.tsv``.
        prefix: added to every sentence (e5 uses ``"query: "`` on STS; MiniLM none).
    """
    from scipy.stats import spearmanr

    s1, s2, gold = read_stsb(path)
    a, b = embed([prefix + s for s in s1]), embed([prefix + s for s in s2])
    return 100 * float(spearmanr(np.sum(a * b, axis=1), gold).correlation)


def stsb_per_contender(contenders, path, reference_name, pairs=None, batch_size=32):
    """STS-B quality of each contender from the same sentences: Spearman ×100 and cosine to the reference.

    Args:
        contenders: objects with ``name`` and ``embed(list[str])``.
        path: ``sts-test.tsv``; ``pairs`` limits it to the first N pairs (``None``: all 1379).
        reference_name: the contender whose vectors the others are compared with (fp32 PyTorch).

    Returns:
        ``{name: {"stsb_spearman", "mean_cosine_to_reference", "min_cosine_to_reference", "sentences"}}``.
    """
    from scipy.stats import spearmanr

    s1, s2, gold = read_stsb(path)
    s1, s2, gold = s1[:pairs], s2[:pairs], gold[:pairs]
    sentences = s1 + s2
    vectors = {}
    for c in contenders:
        parts = [c.embed(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]
        vectors[c.name] = np.concatenate(parts).astype(np.float64)
    ref = vectors[reference_name]
    out = {}
    for name, v in vectors.items():
        a, b = v[: len(s1)], v[len(s1):]
        cos = np.sum(v * ref, axis=1)
        out[name] = {"stsb_spearman": 100 * float(spearmanr(np.sum(a * b, axis=1), gold).correlation),
                     "mean_cosine_to_reference": float(cos.mean()), "min_cosine_to_reference": float(cos.min()),
                     "sentences": len(sentences)}
    return out


def read_scifact(folder):
    """BEIR SciFact test split from ``folder`` (``corpus.part*.jsonl``, ``queries.test.jsonl``, ``qrels/test.tsv``).

    Returns:
        ``(doc_ids, doc_texts, query_ids, query_texts, qrels)`` with ``qrels[query_id] = {doc_id: relevance}``;
        only queries that have qrels are kept, in file order.
    """
    folder = Path(folder)
    doc_ids, doc_texts = [], []
    for part in sorted(folder.glob("corpus.part*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            doc_ids.append(doc["_id"])
            doc_texts.append(f"{doc['title']} {doc['text']}".strip())
    qrels = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    query_ids, query_texts = [], []
    for line in (folder / "queries.test.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if q["_id"] in qrels:
            query_ids.append(q["_id"])
            query_texts.append(q["text"])
    return doc_ids, doc_texts, query_ids, query_texts, qrels


def ndcg_at_k(scores, doc_ids, query_ids, qrels, k=10):
    """Mean nDCG@k ×100 of ranking every document by ``scores``.

    Args:
        scores: ``(n_queries, n_docs)`` similarity matrix.
        doc_ids, query_ids: ids of the columns and rows.
        qrels: ``{query_id: {doc_id: relevance}}``.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for row, qid in zip(scores, query_ids):
        top = np.argpartition(-row, k)[:k]
        top = top[np.argsort(-row[top], kind="stable")]
        rel = qrels.get(qid, {})
        gains = np.array([rel.get(doc_ids[j], 0) for j in top], dtype=np.float64)
        ideal = np.sort(np.array(list(rel.values()), dtype=np.float64))[::-1][:k]
        idcg = float(np.sum(ideal * discounts[: len(ideal)]))
        values.append(float(np.sum(gains * discounts)) / idcg if idcg > 0 else 0.0)
    return 100 * float(np.mean(values))


def scifact_ndcg10(embed_queries, embed_passages, folder):
    """SciFact test nDCG@10 ×100: cosine ranking of the whole corpus for each of the 300 queries.

    Args:
        embed_queries, embed_passages: ``list[str] -> (n, dim)`` unit vectors (add e5 prefixes inside).
        folder: the SciFact folder (see :func:`read_scifact`).
    """
    doc_ids, doc_texts, query_ids, query_texts, qrels = read_scifact(folder)
    docs = embed_passages(doc_texts)
    queries = embed_queries(query_texts)
    return ndcg_at_k(queries @ docs.T, doc_ids, query_ids, qrels)


def main(argv=None):
    """``python -m e5onnx.bench.quality MODEL_DIR``: STS-B and SciFact scores of one exported variant."""
    import argparse
    import time

    from ..config import SHARED_ENV, shared_dir
    from ..runtime.embedder import Embedder

    shared = shared_dir() / "data"
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model_dir")
    p.add_argument("--variant", default="fp32")
    p.add_argument("--max-length", type=int, help="e.g. 256 for all-MiniLM-L6-v2's published protocol")
    p.add_argument("--e5-prefixes", action="store_true",
                   help="'query: ' on STS sentences and queries, 'passage: ' on documents (e5 protocol)")
    p.add_argument("--data", default=str(shared),
                   help=f"folder with stsb/ and scifact/ (default ${SHARED_ENV}/data, else ../shared/data: {shared})")
    p.add_argument("--skip-scifact", action="store_true")
    args = p.parse_args(argv)
    e = Embedder.load(args.model_dir, variant=args.variant, max_length=args.max_length)
    queries = e.embed_queries if args.e5_prefixes else e.embed
    passages = e.embed_passages if args.e5_prefixes else e.embed
    t0 = time.perf_counter()
    print(f"STS-B test Spearman x100: {stsb_spearman(queries, Path(args.data) / 'stsb' / 'sts-test.tsv'):.2f} "
          f"({time.perf_counter() - t0:.0f} s)")
    if not args.skip_scifact:
        t0 = time.perf_counter()
        print(f"SciFact test nDCG@10 x100: {scifact_ndcg10(queries, passages, Path(args.data) / 'scifact'):.2f} "
              f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
