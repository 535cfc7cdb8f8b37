"""The in-process backend of a corpus job: consecutive records embedded by one :class:`~e5onnx.runtime.Embedder`."""

import dataclasses

from .records import Window


def chunks(items, size):
    """Lists of ``size`` consecutive items of the iterable ``items`` (the last one shorter, none empty)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def local_windows(embedder, records, window_rows, kind, batch_size):
    """:class:`~e5onnx.corpus.records.Window` after Window of ``window_rows`` consecutive records.

    The good records' texts of a window go through :meth:`Embedder.prepare <e5onnx.runtime.Embedder.prepare>`
    (``kind`` prefix, truncation at the max length) and one :meth:`~e5onnx.runtime.Embedder.run` (length-sorted
    passes of at most ``batch_size`` texts, then back in order).

    Yields:
        Window: ``vectors`` ``(good records, dim)`` float32 unit rows.
    """
    for chunk in chunks(records, window_rows):
        chunk, prepared = prepare_window(embedder, chunk, kind)
        yield Window(chunk, embedder.run(prepared, batch_size=batch_size), prepared.token_counts)


def prepare_window(embedder, chunk, kind):
    """``(records, Prepared)``: the good records' texts prepared; a text the Embedder refuses (a lone surrogate,
    from a JSON ``\\ud800`` escape) makes its record bad with the Embedder's reason, as a reader's bad row."""
    good = [i for i, r in enumerate(chunk) if r.ok]
    prepared = embedder.prepare([chunk[i].text for i in good], kind, True)
    if not prepared.errors:
        return chunk, prepared
    refused = {good[e.index]: e.reason for e in prepared.errors}
    chunk = [dataclasses.replace(r, text=None, error=refused[i]) if i in refused else r for i, r in enumerate(chunk)]
    return prepare_window(embedder, chunk, kind)
