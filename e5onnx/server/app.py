"""The HTTP application (Starlette, run by uvicorn): OpenAI- and text-embeddings-inference-compatible routes.

Routes: ``POST /v1/embeddings`` (OpenAI), ``POST /embed`` and ``POST /tokenize`` (TEI), ``GET /v1/models``,
``GET /health``, ``GET /info``, ``GET /metrics`` (Prometheus); handlers in :mod:`.handlers`. Every error is an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` (:mod:`.errors`), with a 4xx status for bad input; a bad
request never disturbs the next one. With an API key, every route but ``/health`` needs
``Authorization: Bearer KEY`` (compared in constant time). Run it with :class:`e5onnx.server.main.Server`, which
tells the app when a shutdown starts: requests still running ``--graceful-timeout-s`` later get 503.
"""

import contextlib
import hmac
import logging
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from . import handlers
from .errors import HTTPError, as_http_error, error_response
from .pipeline import check_embedding
from .state import AppState

log = logging.getLogger("e5onnx.server")

#: ``(path, handler, method, public)``: public routes need no API key.
ROUTES = (
    ("/v1/embeddings", handlers.openai_embeddings, "POST", False),
    ("/embed", handlers.tei_embed, "POST", False),
    ("/tokenize", handlers.tokenize, "POST", False),
    ("/v1/models", handlers.models, "GET", False),
    ("/health", handlers.health, "GET", True),
    ("/info", handlers.info, "GET", False),
    ("/metrics", handlers.metrics, "GET", False),
)


def create_app(embedder, settings, model_id=None):
    """The Starlette app serving ``embedder`` with ``settings`` (:class:`~e5onnx.server.settings.ServerSettings`);
    its :class:`~e5onnx.server.state.AppState` is ``app.state.e5onnx``.

    Args:
        embedder: a loaded :class:`~e5onnx.runtime.Embedder`.
        model_id: the name reported in responses and ``/info`` (default: the settings' model).

    Raises:
        InvalidInputError: ``settings.api_key_env`` names an unset or empty variable.
    """
    state = AppState(embedder, settings, model_id or settings.model)
    routes = [Route(path, _endpoint(path, handler, public), methods=[method]) for path, handler, method, public in ROUTES]
    middleware = []
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=_lifespan,
                    exception_handlers={HTTPException: _starlette_error})
    app.state.e5onnx = state
    return app


@contextlib.asynccontextmanager
async def _lifespan(app):
    state = app.state.e5onnx
    state.start()
    await check_embedding(state)  # fail at start-up, not at the first request
    yield
    await state.batcher.stop()


def _endpoint(route, handler, public):
    """``handler`` wrapped: authorised (unless ``public``), cut off at the shutdown deadline, every exception
    answered through :func:`~e5onnx.server.errors.as_http_error`, counted and timed in the metrics."""
    async def endpoint(request):
        state = request.app.state.e5onnx
        started = time.perf_counter()
        try:
            if not public:
                _authorize(state, request)
            response = await state.until_deadline(handler(request))
        except Exception as exc:  # noqa: BLE001 - every failure answers JSON and is counted
            response = error_response(as_http_error(exc))
        state.metrics.requests.labels(route, str(response.status_code)).inc()
        state.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response
    return endpoint


def _authorize(state, request):
    if state.api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.api_key.encode()):
        raise HTTPError("missing or wrong API key: send 'Authorization: Bearer <key>'", 401,
                        headers={"WWW-Authenticate": "Bearer"})


async def _starlette_error(request, exc):
    """Starlette's own 404 (no such route) and 405 (with its Allow header), as OpenAI-style errors."""
    return error_response(HTTPError(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code,
                                    headers=exc.headers))
