"""The route handlers: small functions of a request over the app's :class:`~e5onnx.server.state.AppState`
(``request.app.state.e5onnx``). Authorisation, error mapping, metrics and the shutdown deadline are the
wrapper's in :mod:`e5onnx.server.app`; a handler returns a response or raises."""

import base64

from starlette.responses import JSONResponse, Response

from .. import __version__
from ..errors import E5OnnxError, ModelFolderError
from .body import read_body
from .errors import HTTPError
from .pipeline import admitted, check_embedding, embed
from .requests import parse_json, parse_openai, parse_tei, parse_tokenize
from .state import model_source
from .tokens import tokenize as tokens_of

#: The settings ``GET /info`` reports under ``limits``.
INFO_LIMITS = ("max_batch_tokens", "max_client_batch_size", "max_queue", "max_body_bytes", "body_timeout_s")


async def _body(state, request):
    return parse_json(await read_body(request, state.settings.max_body_bytes, state.settings.body_timeout_s))


def _check_form(state, req):
    """400 before any work when the model cannot give ``req``'s vector form (int8 / uint8 without ranges)."""
    try:
        state.embedder.check_output(req.output)
    except ModelFolderError as exc:
        raise HTTPError(f"'encoding_format' {req.encoding_format}: {exc}", param="encoding_format") from None


def _encoded(state, req, vectors):
    """Each vector in ``req``'s form: a JSON list (floats, or integers for the compact forms) or base64 of its
    bytes (float: little-endian float32; int8 / binary: two's complement bytes; uint8 / ubinary: bytes)."""
    vectors = state.embedder.quantize(vectors, req.output)
    if req.base64:
        return [base64.b64encode(v.astype(v.dtype.newbyteorder("<")).tobytes()).decode("ascii") for v in vectors]
    return vectors.tolist()


async def openai_embeddings(request):
    """``POST /v1/embeddings``: OpenAI's embeddings response, each vector in the ``encoding_format`` asked."""
    state = request.app.state.e5onnx
    req = parse_openai(await _body(state, request), state.embedder.dim, state.settings.max_client_batch_size)
    _check_form(state, req)
    vectors, tokens = await embed(state, req, "input", request)
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(_encoded(state, req, vectors))]
    return JSONResponse({"object": "list", "data": data, "model": state.model_id,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def tei_embed(request):
    """``POST /embed``: text-embeddings-inference's response, a list of vectors (in the ``encoding_format`` asked)."""
    state = request.app.state.e5onnx
    req = parse_tei(await _body(state, request), state.embedder.dim, state.settings.max_client_batch_size)
    _check_form(state, req)
    vectors, _ = await embed(state, req, "inputs", request)
    return JSONResponse(_encoded(state, req, vectors))


async def tokenize(request):
    """``POST /tokenize``: text-embeddings-inference's response, a list of tokens per text (:mod:`.tokens`)."""
    state = request.app.state.e5onnx
    req = parse_tokenize(await _body(state, request), state.settings.max_client_batch_size)
    with admitted(state):
        return JSONResponse(await tokens_of(state, req))


async def models(request):
    """``GET /v1/models``: the served model, OpenAI's shape."""
    model_id = request.app.state.e5onnx.model_id
    return JSONResponse({"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                                     "owned_by": "e5onnx"}]})


async def health(request):
    """``GET /health``: 200 when a test embedding (beside the queue) is a finite unit vector, else 503."""
    state = request.app.state.e5onnx
    if state.batcher.failure is not None:
        raise HTTPError(f"unhealthy: {state.batcher.failure}", 503)
    try:
        await check_embedding(state, direct=True)
    except E5OnnxError as exc:
        raise HTTPError(f"unhealthy: {exc}", 503) from None
    return JSONResponse({"status": "ok"})


async def info(request):
    """``GET /info``: what is served and with which limits."""
    state = request.app.state.e5onnx
    embedder, settings = state.embedder, state.settings
    return JSONResponse({
        "model_id": state.model_id, "model_revision": model_source(embedder)[2], "variant": embedder.variant,
        "embedding_dim": embedder.dim, "max_input_length": embedder.max_length, "threads": embedder.threads,
        "prefixes": {"query": embedder.query_prefix, "passage": embedder.passage_prefix},
        "limits": {k: getattr(settings, k) for k in INFO_LIMITS},
        "cache": _cache_info(state),
        "api_key_required": state.api_key is not None, "version": __version__,
    })


def _cache_info(state):
    """``/info``'s ``cache``: most entries (0: off), entries held, and the bound of their vectors in bytes."""
    cache, entries = state.cache, state.settings.cache_entries
    return {"max_entries": entries, "entries": len(cache) if cache is not None else 0,
            "max_vector_bytes": entries * state.embedder.dim * 4}


async def metrics(request):
    """``GET /metrics``: Prometheus text format."""
    body, content_type = request.app.state.e5onnx.metrics.render()
    return Response(body, media_type=content_type)
