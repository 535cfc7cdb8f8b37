"""The server's settings: one frozen dataclass, filled from command-line flags, then ``E5ONNX_*`` environment
variables, then the defaults in :mod:`e5onnx.config`."""

import os
from dataclasses import dataclass, fields

from .. import config as C
from ..errors import InvalidInputError
from ..runtime.arguments import whole_number


@dataclass(frozen=True)
class ServerSettings:
    """What ``e5onnx serve`` runs with.

    Attributes:
        model: model folder or Hub id (``E5ONNX_MODEL``).
        host / port: where to listen (default 127.0.0.1:8000: loopback only).
        variant: ``auto``, ``fp32``, ``optimized``, ``int8`` or ``bf16``.
        threads: inference threads (None: the CPUs this process may use).
        revision: Hub revision for a Hub id.
        max_batch_tokens: most real tokens merged from queued requests into one inference call.
        max_client_batch_size: most texts in one request (more: 400).
        max_queue: most requests admitted and not yet answered (more: 429 with ``Retry-After``).
        max_body_bytes: largest request body in bytes (more: 413).
        api_key_env: name of the environment variable holding the bearer API key (None: no key needed).
        cors_origins: comma-separated origins allowed by CORS ("" : CORS off).
        graceful_timeout_s: seconds in-flight requests get after SIGTERM/SIGINT (then 503).
        body_timeout_s: seconds a request body may take to arrive in full (then 408).
        cache_entries: most vectors the result cache keeps (0: no cache; :mod:`e5onnx.server.cache`).
    """

    model: str
    host: str = C.SERVER_HOST
    port: int = C.SERVER_PORT
    variant: str = "auto"
    threads: int = None
    revision: str = None
    max_batch_tokens: int = C.SERVER_MAX_BATCH_TOKENS
    max_client_batch_size: int = C.SERVER_MAX_CLIENT_BATCH_SIZE
    max_queue: int = C.SERVER_MAX_QUEUE
    max_body_bytes: int = C.SERVER_MAX_BODY_BYTES
    api_key_env: str = None
    cors_origins: str = ""
    graceful_timeout_s: int = C.SERVER_GRACEFUL_TIMEOUT_S
    body_timeout_s: int = C.SERVER_BODY_TIMEOUT_S
    cache_entries: int = C.SERVER_CACHE_ENTRIES

    def __post_init__(self):
        whole_number("port", self.port, 0, 65535)
        whole_number("cache_entries", self.cache_entries, 0)
        for name in ("max_batch_tokens", "max_client_batch_size", "max_queue", "max_body_bytes", "graceful_timeout_s",
                     "body_timeout_s"):
            whole_number(name, getattr(self, name), 1)

    def api_key(self):
        """The API key read from :attr:`api_key_env`, or None when no key is required.

        Raises:
            InvalidInputError: the variable is named but unset or empty (a server meant to be protected
                must not start open).
        """
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise InvalidInputError(f"--api-key-env {self.api_key_env}: that environment variable is unset or empty")
        return key


_INTS = {f.name for f in fields(ServerSettings) if f.type is int}


def env_name(field):
    """``E5ONNX_<FIELD>``: the environment variable of a setting (``max_queue`` -> ``E5ONNX_MAX_QUEUE``)."""
    return C.SERVER_ENV_PREFIX + field.upper()


def settings_from(values, environ=None):
    """Settings from explicit ``values`` (None entries = not given), then ``E5ONNX_*`` variables, then defaults.

    Raises:
        InvalidInputError: a value is of the wrong kind (``E5ONNX_PORT=abc``), out of range, or no model is
            given; the message names the flag or variable.
    """
    environ = os.environ if environ is None else environ
    chosen = {}
    for f in fields(ServerSettings):
        value = values.get(f.name)
        source = f"--{f.name.replace('_', '-')}"
        if value is None and env_name(f.name) in environ:
            value, source = environ[env_name(f.name)], env_name(f.name)
        if value is None:
            continue
        if f.name in _INTS and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise InvalidInputError(f"{source}={value!r} is not a whole number") from None
        chosen[f.name] = value
    if not chosen.get("model"):
        raise InvalidInputError(f"no model: give a model folder or Hub id, or set {env_name('model')}")
    try:
        return ServerSettings(**chosen)
    except InvalidInputError as exc:
        raise InvalidInputError(f"server setting: {exc}") from None
