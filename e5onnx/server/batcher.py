"""Dynamic batching: the tokenised texts of many concurrent requests merged into inference calls, results
scattered back.

Requests (each a :class:`~e5onnx.runtime.prepared.Prepared`) wait in a FIFO queue. The batching task takes
queued requests, oldest first, until the next one would bring the call over ``max_batch_tokens`` real tokens
(one request alone may exceed it; it then runs alone), and runs them as one
:meth:`~e5onnx.runtime.Embedder.run` call — which sorts the texts by length and packs them into forward passes
of at most :data:`~e5onnx.config.TOKEN_BUDGET` padded tokens, and normalises each request's vectors or not as it
asked — on a single worker thread, off the event loop. If a merged call fails, each of its requests is retried
alone, so a request that fails affects only itself. If the batching task itself dies (a bug), every queued and
every later request gets 503 at once instead of waiting for ever.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import E5OnnxError
from .errors import HTTPError

log = logging.getLogger("e5onnx.server")


class _Job:
    __slots__ = ("future", "normalize", "prepared", "queued_at", "tokens")

    def __init__(self, prepared, normalize, future):
        self.prepared, self.normalize, self.future = prepared, normalize, future
        self.tokens, self.queued_at = prepared.tokens, time.perf_counter()


class Batcher:
    """Merges queued requests into inference calls on one worker thread.

    Args:
        embedder: a loaded :class:`~e5onnx.runtime.Embedder`.
        max_batch_tokens: most real tokens per inference call.
        metrics: a :class:`~e5onnx.server.metrics.Metrics` (queue, inference, batch size and tokens).

    Attributes:
        failure: None while the batching task runs; once it died or was stopped, the message of the 503 every
            request gets.
    """

    def __init__(self, embedder, max_batch_tokens, metrics):
        self.embedder, self.max_batch_tokens, self.metrics = embedder, max_batch_tokens, metrics
        self.failure = None
        self._queue, self._current = [], []
        self._wakeup = self._task = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5onnx-inference")

    def start(self):
        """Start the batching task on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="e5onnx-batcher")
        self._task.add_done_callback(self._ended)

    async def stop(self):
        """Stop the task and let the worker thread go, without waiting for an inference call in progress (at a
        graceful stop nothing is left: every request was answered, or got 503 at the deadline). Requests still
        queued get 503."""
        self._fail("the server is shutting down")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, prepared, normalize):
        """Queue one request; its future gives ``(len(prepared), dim)`` float32 vectors, L2-normalised when
        ``normalize``. Cancel the future to drop the request if it has not started.

        Raises:
            HTTPError: 503 when the batching task is dead or stopped (also through the future, for a request
                queued when it died).
        """
        if self.failure is not None:
            raise HTTPError(self.failure, 503)
        job = _Job(prepared, normalize, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wakeup.set()
        return job.future

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                self._current = self._take()
                if self._current:
                    await self._call(loop, self._current)
                self._current = []

    async def _call(self, loop, jobs):
        """One inference call of ``jobs`` on the worker thread; each job's future gets its vectors or error."""
        started = time.perf_counter()
        for job in jobs:
            self.metrics.queue_seconds.observe(started - job.queued_at)
        results = await loop.run_in_executor(self._executor, self._run, jobs)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        for job, result in zip(jobs, results):
            if job.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _take(self):
        """Oldest queued jobs up to the token budget (at least one); cancelled ones are dropped."""
        self._queue = [job for job in self._queue if not job.future.done()]
        count, tokens = 0, 0
        for job in self._queue:
            if count and tokens + job.tokens > self.max_batch_tokens:
                break
            count, tokens = count + 1, tokens + job.tokens
        jobs, self._queue = self._queue[:count], self._queue[count:]
        if jobs:
            self.metrics.batch_size.observe(sum(len(j.prepared) for j in jobs))
            self.metrics.batch_tokens.observe(tokens)
        return jobs

    def _run(self, jobs):
        """On the worker thread: one merged call; on failure, each job alone. Returns an array or an
        exception per job."""
        try:
            return self.embedder.run([j.prepared for j in jobs], normalize=[j.normalize for j in jobs],
                                     batch_size=sum(len(j.prepared.input_ids) for j in jobs))  # rows: windows too
        except Exception as exc:  # noqa: BLE001 - isolate the failing request below
            if len(jobs) > 1:
                return [self._run([job])[0] for job in jobs]
            if not isinstance(exc, E5OnnxError):
                exc = E5OnnxError(f"inference failed: {type(exc).__name__}: {exc}")
            return [exc]

    def _ended(self, task):
        """Done callback of the batching task: if it died, every queued and later request gets 503."""
        if task.cancelled():
            return
        exc = task.exception()
        log.error("the batching task stopped (%s): every request now gets 503; restart the server",
                  type(exc).__name__, exc_info=exc)
        self._fail("the server cannot embed: its batching task stopped (see the server log); restart the server")

    def _fail(self, message):
        self.failure = message
        for job in self._current + self._queue:
            if not job.future.done():
                job.future.set_exception(HTTPError(message, 503))
        self._current, self._queue = [], []
