"""``e5onnx serve``: bind the address, load the model, run the app on uvicorn until SIGTERM/SIGINT.

Exit statuses (:func:`serve`): 0 after a graceful stop; 3 when the address cannot be bound (in use, unknown
host), before the model is loaded; 1 when ``--graceful-timeout-s`` passed with requests unfinished (they got
503), or the start-up check failed.

On SIGTERM or SIGINT uvicorn stops accepting connections and lets in-flight requests finish; ``--graceful-timeout-s``
after the signal, :class:`Server` has the app answer those still running with a JSON 503, and the process then
exits at once, without waiting for an inference call in progress. uvicorn re-raises the signal it caught once it
is done, which would kill the process with the signal's default action (exit status 143); :func:`serve` installs
no-op handlers first so that the exit status is its own.
"""

import logging
import os
import signal
import socket
import sys
import threading

import uvicorn

from ..config import (
    SERVER_EXIT_CANNOT_LISTEN,
    SERVER_EXIT_CUT_SHORT,
    SERVER_SHUTDOWN_MARGIN_S,
)
from ..runtime import Embedder
from .app import create_app
from .state import model_source

log = logging.getLogger("e5onnx.server")


class Server(uvicorn.Server):
    """uvicorn's server for an app of :func:`~e5onnx.server.app.create_app`: logs the address it really listens
    on (port 0 picks a free one: :attr:`port`), sets :attr:`ready` once started (or failed to start), and starts
    the app's shutdown deadline (:meth:`~e5onnx.server.state.AppState.begin_shutdown`) when the shutdown does.

    Args:
        config: a :class:`uvicorn.Config` of such an app, e.g. from :func:`uvicorn_config`.
    """

    def __init__(self, config):
        super().__init__(config)
        self.state = config.app.state.e5onnx
        self.ready = threading.Event()

    @property
    def port(self):
        """The TCP port listened on (int); only once started."""
        return self.servers[0].sockets[0].getsockname()[1]

    async def startup(self, sockets=None):
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()
        if self.started:
            e = self.state.embedder
            host = self.servers[0].sockets[0].getsockname()[0]
            log.info("e5onnx serving %s on http://%s:%d (variant %s, %d threads)", self.state.model_id,
                     f"[{host}]" if ":" in host else host, self.port, e.variant, e.threads)

    async def shutdown(self, sockets=None):
        self.state.begin_shutdown()
        await super().shutdown(sockets=sockets)


def uvicorn_config(app, settings, log_level="info"):
    """The :class:`uvicorn.Config` of ``app``: lifespan on, no Server header, no proxy headers, and uvicorn's own
    graceful timeout a little past ``--graceful-timeout-s`` (a backstop: the app answers 503 first)."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=settings.graceful_timeout_s + SERVER_SHUTDOWN_MARGIN_S,
                          server_header=False, proxy_headers=False)


def listening_socket(host, port):
    """A TCP socket bound to ``(host, port)`` (port 0: any free port), not yet listening: connections are
    refused until the server has started.

    Raises:
        OSError: the address is in use, or the host is unknown or not this machine's.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def load_embedder(settings):
    """The :class:`~e5onnx.runtime.Embedder` of ``settings`` (model folder or Hub id, variant, threads).

    Raises:
        ModelFolderError / InvalidInputError / BackendUnavailableError: as :meth:`Embedder.load`.
    """
    return Embedder.load(settings.model, variant=settings.variant, threads=settings.threads, revision=settings.revision)


def model_id(embedder, settings):
    """The name clients see: the Hub id the model was exported from (e.g. ``intfloat/e5-small``), else the
    served folder's name (an export from a local folder records a path, which is no name for clients)."""
    hub_id, path, _ = model_source(embedder)
    if hub_id and not path:
        return hub_id
    return str(settings.model).rstrip("/").rsplit("/", 1)[-1]


def serve(settings, log_level="info"):
    """Run the server in the foreground until SIGTERM/SIGINT; return its exit status (see the module docstring).

    Raises:
        E5OnnxError: the model cannot be loaded or the API key variable is unset (before listening).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings.api_key()  # an unset key variable fails before anything else
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return SERVER_EXIT_CANNOT_LISTEN
    embedder = load_embedder(settings)
    app = create_app(embedder, settings, model_id(embedder, settings))
    server = Server(uvicorn_config(app, settings, log_level))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # what uvicorn re-raises after its graceful stop: nothing more
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's way of saying the start-up (our lifespan check) failed; it logged why
        return 1
    if server.state.cut_short:
        log.warning("exiting with status %d: %d request(s) were still running after --graceful-timeout-s %d s and "
                    "got 503", SERVER_EXIT_CUT_SHORT, server.state.cut_short, settings.graceful_timeout_s)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(SERVER_EXIT_CUT_SHORT)  # an inference call may still run on its thread: do not wait for it
    return 0 if server.started else 1
