"""The state one app of :func:`~e5onnx.server.app.create_app` shares between its handlers
(``request.app.state.e5onnx``): the embedder, settings, metrics, batcher, the admitted-request count, and the
shutdown deadline."""

import asyncio
import logging

from .batcher import Batcher
from .cache import ResultCache
from .errors import HTTPError
from .metrics import Metrics

log = logging.getLogger("e5onnx.server")


def model_source(embedder):
    """Where the served model was exported from, as its manifest records it: ``(hub_id, local_path, revision)``,
    each None when not recorded (no manifest, or an export from a local folder has no Hub id). The server's one
    read of the manifest."""
    if embedder.manifest is None:
        return None, None, None
    source = embedder.manifest.source
    return source.id, source.path, source.revision


class AppState:
    """What every handler of one app shares.

    Attributes:
        embedder, settings, model_id: what is served, how, and under which name.
        metrics: the :class:`~e5onnx.server.metrics.Metrics`; batcher: the :class:`~e5onnx.server.batcher.Batcher`.
        cache: the :class:`~e5onnx.server.cache.ResultCache` of ``--cache-entries``, or None (off).
        api_key: the bearer key every route but ``/health`` needs, or None.
        pending: requests admitted and not yet answered (``--max-queue`` bounds it).
        cut_short: requests answered 503 because ``--graceful-timeout-s`` passed while they ran.

    Raises:
        InvalidInputError: ``settings.api_key_env`` names an unset or empty variable.
    """

    def __init__(self, embedder, settings, model_id):
        self.embedder, self.settings, self.model_id = embedder, settings, model_id
        self.metrics = Metrics(settings.max_batch_tokens)
        self.batcher = Batcher(embedder, settings.max_batch_tokens, self.metrics)
        self.cache = (ResultCache(settings.cache_entries, embedder.dim, embedder.identity(), self.metrics)
                      if settings.cache_entries else None)
        self.api_key = settings.api_key()
        self.pending = 0
        self.cut_short = 0
        self._deadline = None

    def start(self):
        """On the running event loop, before the first request: start the batcher."""
        self._deadline = asyncio.get_running_loop().create_future()
        self.batcher.start()

    def begin_shutdown(self):
        """The server stopped accepting connections: requests still running ``--graceful-timeout-s`` from now
        get 503 (:meth:`until_deadline`)."""
        timeout = self.settings.graceful_timeout_s
        log.info("shutting down: requests still running in %d s get 503", timeout)
        asyncio.get_running_loop().call_later(timeout, self._expire)

    def _expire(self):
        if not self._deadline.done():
            self._deadline.set_result(None)

    async def until_deadline(self, work):
        """The result of the coroutine ``work`` (one request's handler), unless the shutdown deadline passes
        first: then ``work`` is cancelled (an inference call it waits for is left to finish on its thread).

        Raises:
            HTTPError: 503 "the server is shutting down" at the deadline; else whatever ``work`` raises.
        """
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, self._deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished = task.done()
            if not finished:
                task.cancel()
        if finished:
            return task.result()
        self.cut_short += 1
        raise HTTPError(f"the server is shutting down: the request was still running "
                        f"{self.settings.graceful_timeout_s} s after the shutdown began (--graceful-timeout-s)", 503)
