"""One validated request through the runtime: admit it (``--max-queue``), look it up in the result cache (when
``--cache-entries`` is set), :meth:`~e5onnx.runtime.Embedder.prepare` its texts (or
:meth:`~e5onnx.runtime.Embedder.prepare_ids` its token ids), refuse the unusable ones by index, queue it on the
batcher, and drop it if its client goes away."""

import asyncio
import contextlib
import dataclasses
import functools
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


@contextlib.contextmanager
def admitted(state):
    """Count a request as admitted (``--max-queue``) while the block runs.

    Raises:
        HTTPError: 429 (``Retry-After``) when ``--max-queue`` requests are already admitted.
    """
    settings, metrics = state.settings, state.metrics
    if state.pending >= settings.max_queue:
        raise HTTPError(f"the server is at its limit of {settings.max_queue} queued requests; retry shortly", 429,
                        headers={"Retry-After": str(SERVER_RETRY_AFTER_S)})
    state.pending += 1
    metrics.queue_depth.set(state.pending)
    try:
        yield
    finally:
        state.pending -= 1
        metrics.queue_depth.set(state.pending)


async def embed(state, req, field, request):
    """Vectors and token count of a validated request (:class:`~e5onnx.server.requests.EmbedRequest`).

    With the result cache on, only the inputs not in it are embedded (each distinct one once); the others are
    copied from it (see :mod:`e5onnx.server.cache`).

    Args:
        field: the request field holding the texts (``"input"``, ``"inputs"``), for error messages.

    Returns:
        ``(vectors, tokens)``: ``(len(req.texts), dim)`` float32 (unit rows when ``req.normalize``), and the real
        token count, ``[CLS]`` and ``[SEP]`` included (with ``truncate: "windows"``, every window's).

    Raises:
        HTTPError: 429 when ``--max-queue`` requests are already admitted; 400 for a text over the max length with
            truncation off, one with no token, a token-id array that is empty, holds an id outside the
            vocabulary or is over the max length with truncation off (``field[i]`` named); 499 when the client
            goes away while the request is queued; 503 when the batcher is dead.
        E5OnnxError: inference failed for this request.
    """
    with admitted(state):
        if state.cache is None:
            vectors, prepared = await _embed(state, req, field, request)
            return vectors, prepared.tokens
        found, vectors, counts = state.cache.lookup(req), None, None
        if found.misses:
            missing = dataclasses.replace(req, texts=[req.texts[i] for i in found.misses])
            vectors, prepared = await _embed(state, missing, field, request, found.misses)
            counts = prepared.token_counts
        state.cache.store(found, vectors, counts)
        return found.vectors, int(found.tokens.sum())


async def _embed(state, req, field, request, where=None):
    """``(vectors, prepared)`` of ``req`` through the batcher; ``where[i]`` is the request's index of input ``i``
    (for errors), None: the same."""
    prepared = await _prepare(state, req)
    _refuse(prepared, req, field, where)
    future = state.batcher.submit(prepared, req.normalize)
    return await _unless_disconnected(request, future), prepared


async def _prepare(state, req):
    """The request's :class:`~e5onnx.runtime.prepared.Prepared`, through :func:`sized_work`."""
    started = time.perf_counter()
    embedder = state.embedder
    if req.token_ids:  # size: ids, about as costly to check as characters to tokenise
        work = functools.partial(embedder.prepare_ids, req.texts, req.truncate)
    else:
        work = functools.partial(embedder.prepare, req.texts, req.prompt, req.truncate)
    prepared = await sized_work(sum(len(item) for item in req.texts), work)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - started)
    return prepared


async def sized_work(size, work):
    """``work()`` on the event loop when ``size`` (characters or token ids) is at most
    :data:`~e5onnx.config.SERVER_INLINE_TOKENIZE_CHARS` (a thread hop would cost more than the work), else in a
    worker thread so the loop keeps accepting connections."""
    return work() if size <= SERVER_INLINE_TOKENIZE_CHARS else await run_in_threadpool(work)


def _refuse(prepared, req, field, where=None):
    """400 for the first input the runtime refused (a text over the max length with truncation off; a bad
    token-id array), else for the first text with only ``[CLS] [SEP]`` (invisible characters such as U+200B,
    U+FEFF and controls give no token; token ids are taken as given)."""
    index = (lambda i: i) if where is None else where.__getitem__
    if prepared.errors:
        error = prepared.errors[0]
        hint = ("" if req.truncate or "truncation is off" not in error.reason else "; send truncate: true to cut it"
                + ("" if req.token_ids else ', or "windows" to embed it whole'))
        raise HTTPError(f"{field}[{index(error.index)}]: {error.reason}{hint}", param=field)
    empty = [] if req.token_ids else np.flatnonzero(prepared.token_counts <= 2)
    if len(empty):
        raise HTTPError(f"{field}[{index(int(empty[0]))}] has no tokens (only invisible or control characters)",
                        param=field)


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
