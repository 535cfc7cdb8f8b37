"""Helpers of the server tests (test_server*.py): a uvicorn server in a thread on a port it picks itself, a
wait for a condition, and an embedder whose inference calls can be held and are recorded."""

import threading
import time

import httpx

from e5onnx.errors import E5OnnxError
from e5onnx.server.app import create_app
from e5onnx.server.main import Server, uvicorn_config
from e5onnx.server.settings import ServerSettings

TIMEOUT = 60  # seconds: no request of these tests may take longer


class Running:
    """A uvicorn server for ``app`` (:class:`e5onnx.server.main.Server`) on a loopback port it picks itself (port 0),
    in a thread; ``stop()`` ends it."""

    def __init__(self, app, settings, embedder):
        self.embedder, self.state = embedder, app.state.e5onnx
        self.server = Server(uvicorn_config(app, settings, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert self.server.ready.wait(TIMEOUT) and self.server.started, "server did not start"
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=TIMEOUT)

    def stop(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()

    def count(self, status, route="/v1/embeddings"):
        """Requests answered with ``status`` on ``route``, from the metrics registry."""
        value = self.state.metrics.registry.get_sample_value("e5onnx_requests_total",
                                                             {"route": route, "status": str(status)})
        return value or 0


def serve(embedder, **settings):
    """A :class:`Running` server of ``embedder`` with ``settings`` (``ServerSettings`` fields) on 127.0.0.1."""
    settings = ServerSettings(model="tiny", host="127.0.0.1", port=0, **settings)
    return Running(create_app(embedder, settings, "tiny-model"), settings, embedder)


def until(condition, what):
    """Wait until ``condition()`` holds (checked every 10 ms), at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


class Fake:
    """An embedder whose inference calls (on the batcher's thread only) are recorded (``calls``: the texts of each
    queued request in the call), wait while ``gate`` is shut (``entered`` is set when one does), and fail when a
    text holds the token id ``bad``."""

    def __init__(self, inner, bad=None):
        self.inner, self.bad, self.calls = inner, bad, []
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def shut(self):
        self.calls.clear()
        self.entered.clear()
        self.gate.clear()

    def run(self, prepared, **kw):
        parts = prepared if isinstance(prepared, list) else [prepared]
        if threading.current_thread().name.startswith("e5onnx-inference"):
            self.calls.append([len(p) for p in parts])
            self.entered.set()
            assert self.gate.wait(TIMEOUT)
        if self.bad is not None and any(self.bad in row for p in parts for row in p.input_ids):
            raise E5OnnxError("synthetic failure")
        return self.inner.run(prepared, **kw)
