"""Reading a request body within the server's limits: media type, content coding, size and time."""

import asyncio

from .errors import HTTPError


async def read_body(request, max_bytes, timeout_s):
    """The body of ``request`` (bytes), read whole.

    Args:
        max_bytes: largest body accepted (``--max-body-bytes``).
        timeout_s: seconds the whole body may take to arrive (``--body-timeout-s``).

    Raises:
        HTTPError: 415 unless the Content-Type is ``application/json`` or absent (a browser page may send
            ``text/plain`` or form posts to any origin without a CORS preflight; JSON needs one), or when a
            Content-Encoding other than ``identity`` is declared (the body is not decompressed); 413 as soon as
            the body is known to exceed ``max_bytes`` (header or stream); 408 (``Connection: close``) when it is
            not complete within ``timeout_s``; a client that goes away mid-body ends it with Starlette's
            ``ClientDisconnect`` (499, see :mod:`e5onnx.server.errors`).
    """
    _check_headers(request.headers, max_bytes)
    try:
        return await asyncio.wait_for(_read(request, max_bytes), timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(f"the request body was not complete within {timeout_s} s (--body-timeout-s)", 408,
                        headers={"Connection": "close"}) from None


def _check_headers(headers, max_bytes):
    content_type = headers.get("content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPError(f"Content-Type must be application/json, got '{_shown(content_type)}'", 415)
    encoding = headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise HTTPError(f"unsupported Content-Encoding '{_shown(encoding)}': send the JSON body uncompressed", 415)
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPError(f"request body of {int(declared)} bytes is over the limit of {max_bytes} bytes", 413)


async def _read(request, max_bytes):
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPError(f"request body is over the limit of {max_bytes} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _shown(value):
    """A header value safe to quote: at most 64 characters, ASCII."""
    return value[:64].encode("ascii", "backslashreplace").decode("ascii")
