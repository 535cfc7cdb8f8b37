"""HTTP errors: :class:`HTTPError`, and the one table that maps every exception a request can end in to a status
and an OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``.

Every path answers through :func:`as_http_error` and :func:`error_response`: the routes, Starlette's 404/405
handler, the batcher's 503s and the shutdown deadline's 503.
"""

import logging

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from ..errors import E5OnnxError, InvalidInputError

log = logging.getLogger("e5onnx.server")

#: The OpenAI error ``type`` of each status the server answers (499 is nginx's "client closed request").
STATUS_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
    408: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
    429: "rate_limit_error", 499: "client_closed_request", 500: "server_error", 503: "service_unavailable",
}


class HTTPError(E5OnnxError):
    """A request the server refuses or cannot finish, answered with ``status`` and an OpenAI-style body.

    Not an :class:`~e5onnx.errors.InvalidInputError`: 401, 429, 499 and 503 are not about the input.

    Attributes:
        status: the HTTP status (400, 401, 404, 405, 408, 413, 415, 429, 499, 500, 503).
        type: the OpenAI error ``type`` (default: :data:`STATUS_TYPES` of the status).
        param: the request field at fault (``"input"``, ``"dimensions"``, ...), or None.
        headers: extra response headers (``Retry-After`` on 429, ``Connection: close`` on 408).
    """

    def __init__(self, message, status=400, type=None, param=None, headers=None):
        super().__init__(message)
        self.status, self.param, self.headers = status, param, headers or {}
        self.type = type or STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _disconnected(exc):
    log.info("a client closed its connection before its request was read whole")
    return HTTPError("the client closed the connection before its request was read whole", 499)


def _invalid(exc):
    return HTTPError(str(exc))


def _failed(exc):
    log.error("inference failed: %s", type(exc).__name__)
    return HTTPError(f"inference failed: {exc}", 500)


#: Exception class -> its HTTPError, first match wins; anything else is a bug: 500, logged without its message.
EXCEPTION_ERRORS = ((HTTPError, lambda exc: exc), (ClientDisconnect, _disconnected),
                    (InvalidInputError, _invalid), (E5OnnxError, _failed))


def as_http_error(exc):
    """The :class:`HTTPError` that answers ``exc`` (see :data:`EXCEPTION_ERRORS`); server faults are logged with
    the exception's type only: a message may quote user text."""
    for kind, convert in EXCEPTION_ERRORS:
        if isinstance(exc, kind):
            return convert(exc)
    log.error("unexpected %s while answering a request", type(exc).__name__)
    return HTTPError("internal error; the request was not processed", 500)


def error_response(error):
    """The JSON response of an :class:`HTTPError`: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse({"error": {"message": str(error), "type": error.type, "param": error.param,
                                   "code": error.status}}, status_code=error.status, headers=error.headers)
