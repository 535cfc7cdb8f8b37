"""Dynamic batching: texts of many concurrent requests merged into inference calls, results scattered back.

Requests wait in a FIFO queue. The batching task takes queued requests, oldest first, until the next one would
bring the call over ``max_batch_tokens`` real tokens (one request alone may exceed it; it then runs alone),
and runs them as one :meth:`~e5onnx.runtime.Embedder.embed_token_ids` call — which sorts the texts by length
and splits them into forward passes of at most :data:`~e5onnx.config.TOKEN_BUDGET` padded tokens — on a
single worker thread, off the event loop. Each request gets its own rows back. If a merged call fails, each of
its requests is retried alone, so a request that fails affects only itself.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import E5OnnxError
from ..runtime.pooling import l2_normalize


class _Job:
    __slots__ = ("rows", "tokens", "future", "queued_at")

    def __init__(self, rows, future):
        self.rows, self.tokens, self.future, self.queued_at = rows, sum(len(r) for r in rows), future, time.perf_counter()


class Batcher:
    """Merges queued requests into inference calls on one worker thread.

    Args:
        embedder: a loaded :class:`~e5onnx.runtime.Embedder`.
        max_batch_tokens: most real tokens per inference call.
        metrics: a :class:`~e5onnx.server.metrics.Metrics` (queue, inference, batch size and tokens).
    """

    def __init__(self, embedder, max_batch_tokens, metrics):
        self.embedder, self.max_batch_tokens, self.metrics = embedder, max_batch_tokens, metrics
        self._queue = []
        self._wakeup = None
        self._task = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5onnx-inference")

    def start(self):
        """Start the batching task on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="e5onnx-batcher")

    async def stop(self):
        """Finish what is queued, then stop the task and the worker thread."""
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def embed(self, rows):
        """``(len(rows), dim)`` float32 masked mean-pooled vectors (not normalised) of token-id ``rows``.

        Raises:
            E5OnnxError: inference failed for this request (other requests are unaffected).
        """
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wakeup.set()
        return await job.future

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                jobs = self._take()
                if not jobs:
                    continue
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
        jobs, tokens = [], 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():
                self._queue.pop(0)
                continue
            if jobs and tokens + job.tokens > self.max_batch_tokens:
                break
            jobs.append(self._queue.pop(0))
            tokens += job.tokens
        if jobs:
            self.metrics.batch_size.observe(sum(len(j.rows) for j in jobs))
            self.metrics.batch_tokens.observe(tokens)
        return jobs

    def _run(self, jobs):
        """On the worker thread: one merged call; on failure, each job alone. Returns an array or an
        exception per job."""
        rows = [r for job in jobs for r in job.rows]
        try:
            vectors = self.embedder.embed_token_ids(rows, batch_size=max(1, len(rows)), normalize=False)
        except Exception as exc:  # noqa: BLE001 - isolate the failing request below
            if len(jobs) > 1:
                return [self._run([job])[0] for job in jobs]
            if not isinstance(exc, E5OnnxError):
                exc = E5OnnxError(f"inference failed: {type(exc).__name__}: {exc}")
            return [exc]
        out, start = [], 0
        for job in jobs:
            out.append(vectors[start:start + len(job.rows)])
            start += len(job.rows)
        return out


def normalized(vectors):
    """Row-wise L2 normalisation, exactly as :class:`~e5onnx.runtime.Embedder` does it."""
    return l2_normalize(np.asarray(vectors, dtype=np.float32))
