"""The HTTP server (``e5onnx serve``, ``pip install 'e5onnx[server]'``): torch-free, OpenAI- and
text-embeddings-inference-compatible, with dynamic batching and Prometheus metrics.

Modules: :mod:`.settings` (flags and ``E5ONNX_*`` variables), :mod:`.requests` (body parsing and validation),
:mod:`.batcher` (merging requests into inference calls), :mod:`.metrics`, :mod:`.app` (routes), :mod:`.main`
(uvicorn, signals).
"""
