"""The in-process backend of a corpus job: windows of consecutive records embedded by one
:class:`~e5onnx.runtime.Embedder`, and where windows start (:func:`windows_of`, shared with the Ray backend)."""

import dataclasses

from .records import Window


def windows_of(records, window_rows, shard_rows=None):
    """Lists of consecutive records (``Record.ordinal`` counts from the source's first record): a list ends after
    every ``window_rows`` records counted from the start of its shard, and at every shard end (``shard_rows``
    records; None: one shard), so a window never crosses a shard boundary.

    Which texts are embedded together (and so their forward passes' padding and batch shapes, which move int8 and
    bf16 vectors by up to ~6e-4) then depends only on the records' positions: a job resumed at a shard boundary,
    or run on Ray, embeds exactly the windows an uninterrupted in-process run does.
    """
    chunk = []
    for record in records:
        chunk.append(record)
        position = record.ordinal + 1
        if (position % shard_rows if shard_rows else position) % window_rows == 0:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def local_windows(embedder, records, window_rows, kind, batch_size, shard_rows=None):
    """:class:`~e5onnx.corpus.records.Window` after Window of the records, cut as :func:`windows_of`.

    The good records' texts of a window go through :meth:`Embedder.prepare <e5onnx.runtime.Embedder.prepare>`
    (``kind`` prefix, truncation at the max length) and one :meth:`~e5onnx.runtime.Embedder.run` (length-sorted
    passes of at most ``batch_size`` texts, then back in order).

    Yields:
        Window: ``vectors`` ``(good records, dim)`` float32 unit rows.
    """
    for chunk in windows_of(records, window_rows, shard_rows):
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
