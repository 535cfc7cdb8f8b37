"""One validated request through the runtime: admit it (``--max-queue``), :meth:`~e5onnx.runtime.Embedder.prepare`
its texts, refuse the unusable ones by index, queue it on the batcher, and drop it if its client goes away."""

import asyncio
import logging
import time

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..config import (
    SERVER_CHECK_TEXT,
    SERVER_DISCONNECT_POLL_S,
    SERVER_INLINE_TOKENIZE_CHARS,
    SERVER_RETRY_AFTER_S,
)
from ..errors import E5OnnxError
from .errors import HTTPError

log = logging.getLogger("e5onnx.server")


async def embed(state, req, field, request):
    """Vectors and token count of a validated request (:class:`~e5onnx.server.requests.EmbedRequest`).

    Args:
        field: the request field holding the texts (``"input"``, ``"inputs"``), for error messages.

    Returns:
        ``(vectors, tokens)``: ``(len(req.texts), dim)`` float32 (unit rows when ``req.normalize``), and the real
        token count, ``[CLS]`` and ``[SEP]`` included (with ``truncate: "windows"``, every window's).

    Raises:
        HTTPError: 429 when ``--max-queue`` requests are already admitted; 400 for a text over the max length with
            truncation off, or one with no token (``field[i]`` named); 499 when the client goes away while the
            request is queued; 503 when the batcher is dead.
        E5OnnxError: inference failed for this request.
    """
    settings, metrics = state.settings, state.metrics
    if state.pending >= settings.max_queue:
        raise HTTPError(f"the server is at its limit of {settings.max_queue} queued requests; retry shortly", 429,
                        headers={"Retry-After": str(SERVER_RETRY_AFTER_S)})
    state.pending += 1
    metrics.queue_depth.set(state.pending)
    try:
        prepared = await _prepare(state, req)
        _refuse(prepared, req, field)
        future = state.batcher.submit(prepared, req.normalize)
        return await _unless_disconnected(request, future), prepared.tokens
    finally:
        state.pending -= 1
        metrics.queue_depth.set(state.pending)


async def _prepare(state, req):
    """The request's :class:`~e5onnx.runtime.prepared.Prepared`: on the event loop when small (a thread hop would
    cost more than the work), else in a worker thread so the loop keeps accepting connections."""
    started = time.perf_counter()
    if sum(len(t) for t in req.texts) <= SERVER_INLINE_TOKENIZE_CHARS:
        prepared = state.embedder.prepare(req.texts, req.prompt, req.truncate)
    else:
        prepared = await run_in_threadpool(state.embedder.prepare, req.texts, req.prompt, req.truncate)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - started)
    return prepared


def _refuse(prepared, req, field):
    """400 for the first text the runtime refused (over the max length with truncation off), else for the first
    with only ``[CLS] [SEP]`` (invisible characters such as U+200B, U+FEFF and controls give no token)."""
    if prepared.errors:
        error = prepared.errors[0].named(field)
        hint = "" if req.truncate else "; send truncate: true to cut it, or \"windows\" to embed it whole"
        raise HTTPError(f"{error}{hint}", param=field)
    empty = np.flatnonzero(prepared.token_counts <= 2)
    if empty.size:
        raise HTTPError(f"{field}[{empty[0]}] has no tokens (only invisible or control characters)", param=field)


async def _unless_disconnected(request, future):
    """The result of ``future`` (a queued request), unless the client disconnects first: then the future is
    cancelled, so the batcher drops the texts if they have not started, and the request ends as 499 ("client
    closed request", nginx's code); no response can reach the client any more."""
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=SERVER_DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await request.is_disconnected():
                log.info("a client closed its connection while its request was queued")
                raise HTTPError("the client closed the connection before its answer was ready", 499)
    finally:
        future.cancel()  # no-op when done


async def check_embedding(state, direct=False):
    """Embed one short query; raise unless it gives a finite unit vector of the model's width.

    Args:
        direct: on a thread of its own instead of through the batcher's queue, so that ``/health`` answers in
            milliseconds even when minutes of work are queued (onnxruntime and OpenVINO sessions run
            concurrently).

    Raises:
        E5OnnxError: the vector is not a finite unit vector of ``dim`` floats, or inference failed.
        HTTPError: 503 when the batcher is dead (``direct=False``).
    """
    embedder = state.embedder
    prepared = embedder.prepare([SERVER_CHECK_TEXT], "query")
    if direct:
        vectors = await run_in_threadpool(embedder.run, prepared, normalize=True, batch_size=1)
    else:
        vectors = await state.batcher.submit(prepared, True)
    vector = vectors[0]
    if vector.shape != (embedder.dim,) or not np.isfinite(vector).all() or abs(np.linalg.norm(vector) - 1) > 1e-3:
        raise E5OnnxError("the test embedding is not a finite unit vector")
