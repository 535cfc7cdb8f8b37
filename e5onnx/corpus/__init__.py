"""Embed a whole corpus into Parquet: streaming, resumable, in one process or on Ray (``e5onnx corpus``).

Needs the ``corpus`` extra (pyarrow, tqdm); ``--ray`` the ``ray`` extra. See :func:`embed_corpus`.
"""


def embed_corpus(*args, **kwargs):
    """See :func:`e5onnx.corpus.job.embed_corpus` (imported on first use, so ``import e5onnx.corpus`` is cheap)."""
    from .job import embed_corpus as run

    return run(*args, **kwargs)
