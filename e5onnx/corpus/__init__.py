"""Embed a whole corpus into Parquet: streaming, resumable, in one process or on Ray (``e5onnx corpus``).

Needs the ``corpus`` extra (pyarrow, tqdm); ``--ray`` the ``ray`` extra. See :func:`embed_corpus`
(:func:`e5onnx.corpus.job.embed_corpus`, imported on first use so that ``import e5onnx.corpus`` stays cheap).
"""

__all__ = ["embed_corpus"]


def __getattr__(name):  # PEP 562: the real function, with its own signature and docstring, on first use
    if name == "embed_corpus":
        from .job import embed_corpus

        return embed_corpus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
