"""The HTTP application (Starlette, run by uvicorn): OpenAI- and text-embeddings-inference-compatible routes.

Routes: ``POST /v1/embeddings`` (OpenAI), ``POST /embed`` (TEI), ``GET /v1/models``, ``GET /health``,
``GET /info``, ``GET /metrics`` (Prometheus). Every error is an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for bad input; a bad request never
disturbs the next one. With an API key, every route but ``/health`` needs ``Authorization: Bearer KEY``
(compared in constant time). Request bodies over ``max_body_bytes`` get 413 before they are read whole.
"""

import asyncio
import base64
import contextlib
import hmac
import logging
import time

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..config import SERVER_RETRY_AFTER_S
from ..errors import E5OnnxError, InvalidInputError, RequestError
from ..runtime.texts import add_prefix
from .batcher import Batcher, normalized
from .metrics import Metrics
from .requests import parse_json, parse_openai, parse_tei

log = logging.getLogger("e5onnx.server")

#: Requests with at most this many characters are tokenised on the event loop (well under 1 ms); larger ones in
#: a worker thread, so the loop keeps accepting connections.
INLINE_TOKENIZE_CHARS = 4096

_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
               413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}


def error_response(status, message, type_="invalid_request_error", param=None, headers=None):
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


class _State:
    """Per-app state: the embedder, batcher, metrics, settings and the count of admitted requests."""

    def __init__(self, embedder, settings, model_id):
        self.embedder, self.settings, self.model_id = embedder, settings, model_id
        self.metrics = Metrics(settings.max_batch_tokens)
        self.batcher = Batcher(embedder, settings.max_batch_tokens, self.metrics)
        self.api_key = settings.api_key()
        self.pending = 0


def create_app(embedder, settings, model_id=None):
    """The Starlette app serving ``embedder`` with ``settings`` (:class:`~e5onnx.server.settings.ServerSettings`).

    Args:
        embedder: a loaded :class:`~e5onnx.runtime.Embedder`.
        model_id: the name reported in responses and ``/info`` (default: the settings' model).

    Raises:
        InvalidInputError: ``settings.api_key_env`` names an unset or empty variable.
    """
    state = _State(embedder, settings, model_id or settings.model)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher.start()
        await _check_embedding(state)  # fail at start-up, not at the first request
        log.info("e5onnx serving %s (variant %s, %d threads)", state.model_id, embedder.variant, embedder.threads)
        yield
        await state.batcher.stop()

    def guarded(route, handler, public=False):
        async def endpoint(request):
            started = time.perf_counter()
            try:
                if not public:
                    _authorize(state, request)
                response = await handler(request)
            except RequestError as exc:
                response = error_response(exc.status, str(exc), exc.type, exc.param, exc.headers)
            except InvalidInputError as exc:
                response = error_response(400, str(exc))
            except E5OnnxError as exc:
                log.error("%s failed: %s", route, type(exc).__name__)
                response = error_response(500, f"inference failed: {exc}", "server_error")
            except Exception as exc:  # noqa: BLE001 - a bug must still answer JSON and be counted
                log.error("%s: unexpected %s", route, type(exc).__name__)  # no message: it may quote user text
                response = error_response(500, "internal error; the request was not processed", "server_error")
            state.metrics.requests.labels(route, str(response.status_code)).inc()
            state.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
            return response
        return endpoint

    async def openai_embeddings(request):
        req = parse_openai(parse_json(await _read_body(request, settings.max_body_bytes)),
                           embedder.dim, settings.max_client_batch_size)
        vectors, tokens = await _embed(state, req, "input", request)
        data = [{"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")
                               if req.encoding_format == "base64" else v.tolist())}
                for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": state.model_id,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def tei_embed(request):
        req = parse_tei(parse_json(await _read_body(request, settings.max_body_bytes)),
                        embedder.dim, settings.max_client_batch_size)
        vectors, _ = await _embed(state, req, "inputs", request)
        return JSONResponse(vectors.tolist())

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0,
                                                         "owned_by": "e5onnx"}]})

    async def health(request):
        try:
            await _check_embedding(state, direct=True)
        except E5OnnxError as exc:
            raise RequestError(f"unhealthy: {exc}", 503, "service_unavailable") from None
        return JSONResponse({"status": "ok"})

    async def info(request):
        revision = embedder.manifest.source.revision if embedder.manifest is not None else None
        return JSONResponse({
            "model_id": state.model_id, "model_revision": revision, "variant": embedder.variant,
            "embedding_dim": embedder.dim, "max_input_length": embedder.max_length, "threads": embedder.threads,
            "prefixes": {"query": embedder.query_prefix, "passage": embedder.passage_prefix},
            "limits": {k: getattr(settings, k) for k in ("max_batch_tokens", "max_client_batch_size", "max_queue",
                                                          "max_body_bytes")},
            "api_key_required": state.api_key is not None, "version": __version__,
        })

    async def metrics(request):
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    routes = [
        Route("/v1/embeddings", guarded("/v1/embeddings", openai_embeddings), methods=["POST"]),
        Route("/embed", guarded("/embed", tei_embed), methods=["POST"]),
        Route("/v1/models", guarded("/v1/models", models), methods=["GET"]),
        Route("/health", guarded("/health", health, public=True), methods=["GET"]),
        Route("/info", guarded("/info", info), methods=["GET"]),
        Route("/metrics", guarded("/metrics", metrics), methods=["GET"]),
    ]
    middleware = []
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))

    async def http_error(request, exc):  # 404, 405 (with its Allow header)
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                              _HTTP_TYPES.get(exc.status_code, "invalid_request_error"), headers=exc.headers)

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.e5onnx = state
    return app


def _authorize(state, request):
    if state.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.api_key.encode()):
        raise RequestError("missing or wrong API key: send 'Authorization: Bearer <key>'", 401, "authentication_error",
                           headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request, limit):
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes (header or stream), and with
    415 unless its Content-Type is ``application/json`` or absent: a browser page may send ``text/plain`` or form
    posts to any origin without a CORS preflight, JSON needs one."""
    content_type = request.headers.get("content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() != "application/json":
        shown = content_type[:64].encode("ascii", "backslashreplace").decode("ascii")
        raise RequestError(f"Content-Type must be application/json, got '{shown}'", 415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {int(declared)} bytes is over the limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _embed(state, req, field, request):
    """Vectors ``(n, dim)`` float32 and the real token count of a validated request, through the batcher.

    Raises:
        RequestError: 429 when ``max_queue`` requests are already admitted; 400 for a text over the max length
            with truncation off (index and token count in the message).
    """
    settings, embedder, metrics = state.settings, state.embedder, state.metrics
    if state.pending >= settings.max_queue:
        raise RequestError(f"the server is at its limit of {settings.max_queue} queued requests; retry shortly",
                           429, "rate_limit_error", headers={"Retry-After": str(SERVER_RETRY_AFTER_S)})
    state.pending += 1
    metrics.queue_depth.set(state.pending)
    try:
        texts = req.texts
        if req.prompt:
            texts = add_prefix(texts, embedder.query_prefix if req.prompt == "query" else embedder.passage_prefix)
        started = time.perf_counter()
        try:
            if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:  # a thread hop would cost more than the work
                rows = embedder.tokenize(texts, req.truncate)
            else:
                rows = await run_in_threadpool(embedder.tokenize, texts, req.truncate)
        except InvalidInputError as exc:  # "texts[i] has N tokens, over max_length M, and truncation is off"
            message = str(exc).replace("texts[", f"{field}[", 1)
            raise RequestError(message + "; send truncate: true to cut it", param=field, index=exc.index) from None
        metrics.tokenize_seconds.observe(time.perf_counter() - started)
        for i, row in enumerate(rows):
            if len(row) <= 2:  # [CLS] [SEP] only: invisible characters (U+200B, U+FEFF, controls) give no token
                raise RequestError(f"{field}[{i}] has no tokens (only invisible or control characters)",
                                   param=field, index=i)
        pooled = await _unless_disconnected(request, asyncio.ensure_future(state.batcher.embed(rows)))
        vectors = normalized(pooled) if req.normalize else np.asarray(pooled, dtype=np.float32)
        return vectors, sum(len(r) for r in rows)
    finally:
        state.pending -= 1
        metrics.queue_depth.set(state.pending)


#: How often a queued request checks whether its client is still connected, seconds.
DISCONNECT_POLL_S = 0.25


async def _unless_disconnected(request, task):
    """The result of ``task`` (a queued embedding), unless the client disconnects first: then the task is
    cancelled, so the batcher drops the texts if they have not started, and a 499 ("client closed request",
    nginx's code) is counted; no response can reach the client any more."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise RequestError("the client closed the connection before its answer was ready", 499)


async def _check_embedding(state, direct=False):
    """Embed one short query; raise :class:`E5OnnxError` unless a finite unit vector.

    ``direct``: on a thread of its own instead of through the batcher's queue, so that ``/health`` answers in
    milliseconds even when minutes of work are queued (onnxruntime and OpenVINO sessions run concurrently).
    """
    rows = state.embedder.tokenize(["query: health check"])
    if direct:
        pooled = await run_in_threadpool(state.embedder.embed_token_ids, rows, batch_size=1, normalize=False)
    else:
        pooled = await state.batcher.embed(rows)
    vector = normalized(pooled)[0]
    if vector.shape != (state.embedder.dim,) or not np.isfinite(vector).all() or abs(np.linalg.norm(vector) - 1) > 1e-3:
        raise E5OnnxError("the test embedding is not a finite unit vector")
