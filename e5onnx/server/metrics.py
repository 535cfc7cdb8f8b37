"""Prometheus metrics of one server (prometheus-client, a registry per app so several apps can coexist).

Names follow Prometheus conventions (base units: seconds; ``_total`` counters):

- ``e5onnx_requests_total{route,status}``: answered requests by route and HTTP status.
- ``e5onnx_request_seconds{route}``: whole request time.
- ``e5onnx_queue_seconds``: from a request's texts entering the queue to their inference call starting.
- ``e5onnx_tokenize_seconds``: tokenising one request.
- ``e5onnx_inference_seconds``: one inference call (several requests merged).
- ``e5onnx_batch_size``: texts per inference call; ``e5onnx_batch_tokens``: real tokens per inference call.
- ``e5onnx_queue_depth``: requests admitted and not yet answered.
- ``e5onnx_cache_hits_total`` / ``e5onnx_cache_misses_total``: inputs answered from the result cache / embedded
  (``--cache-entries``; both stay 0 when it is off); ``e5onnx_cache_evictions_total``: entries dropped for room;
  ``e5onnx_cache_entries``: entries held.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets, seconds: 1 ms to 30 s.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The server's metrics in their own :class:`prometheus_client.CollectorRegistry`."""

    def __init__(self, max_batch_tokens):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("e5onnx_requests", "Answered requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram("e5onnx_request_seconds", "Whole request time", ["route"],
                                         buckets=SECONDS, registry=r)
        self.queue_seconds = Histogram("e5onnx_queue_seconds", "Time queued before inference", buckets=SECONDS,
                                       registry=r)
        self.tokenize_seconds = Histogram("e5onnx_tokenize_seconds", "Tokenising one request", buckets=SECONDS,
                                          registry=r)
        self.inference_seconds = Histogram("e5onnx_inference_seconds", "One inference call", buckets=SECONDS,
                                           registry=r)
        self.batch_size = Histogram("e5onnx_batch_size", "Texts per inference call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        token_buckets = tuple(b for b in (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
                              if b < max_batch_tokens) + (max_batch_tokens,)
        self.batch_tokens = Histogram("e5onnx_batch_tokens", "Real tokens per inference call", buckets=token_buckets,
                                      registry=r)
        self.queue_depth = Gauge("e5onnx_queue_depth", "Requests admitted and not yet answered", registry=r)
        self.cache_hits = Counter("e5onnx_cache_hits", "Inputs answered from the result cache", registry=r)
        self.cache_misses = Counter("e5onnx_cache_misses", "Inputs looked up in the result cache and embedded",
                                    registry=r)
        self.cache_evictions = Counter("e5onnx_cache_evictions", "Result cache entries dropped for room",
                                       registry=r)
        self.cache_entries = Gauge("e5onnx_cache_entries", "Result cache entries held", registry=r)

    def render(self):
        """``(body bytes, content type)`` in the Prometheus text exposition format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
