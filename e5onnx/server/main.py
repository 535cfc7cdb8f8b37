"""``e5onnx serve``: load the model, then run the app on uvicorn until SIGTERM/SIGINT, and exit 0.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets in-flight requests finish (at most
``graceful_timeout_s`` seconds), then the app's shutdown drains the batcher. uvicorn re-raises the signal it
caught once it is done, which would kill the process with the signal's default action (exit status 143);
:func:`serve` installs no-op handlers first so that a graceful stop ends with exit status 0.
"""

import logging
import signal

from ..runtime import Embedder
from .app import create_app


def load_embedder(settings):
    """The :class:`~e5onnx.runtime.Embedder` of ``settings`` (model folder or Hub id, variant, threads).

    Raises:
        ModelFolderError / InvalidInputError / BackendUnavailableError: as :meth:`Embedder.load`.
    """
    return Embedder.load(settings.model, variant=settings.variant, threads=settings.threads, revision=settings.revision)


def model_id(embedder, settings):
    """The name clients see: the Hub id the model was exported from (e.g. ``intfloat/e5-small``), else the
    served folder's name (an export from a local folder records a path, which is no name for clients)."""
    if embedder.manifest is not None and embedder.manifest.source.hub_id:
        return embedder.manifest.source.hub_id
    return str(settings.model).rstrip("/").rsplit("/", 1)[-1]


def serve(settings, log_level="info"):
    """Run the server in the foreground until SIGTERM/SIGINT; return 0 after a graceful stop.

    Raises:
        E5OnnxError: the model cannot be loaded or the API key variable is unset (before listening).
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    embedder = load_embedder(settings)
    app = create_app(embedder, settings, model_id(embedder, settings))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            timeout_graceful_shutdown=settings.graceful_timeout_s, lifespan="on",
                            server_header=False, proxy_headers=False)
    server = uvicorn.Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # what uvicorn re-raises after its graceful stop: nothing more
    server.run()
    return 0 if server.started else 1
