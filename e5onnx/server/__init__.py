"""The HTTP server (``e5onnx serve``, ``pip install 'e5onnx[server]'``): torch-free, OpenAI- and
text-embeddings-inference-compatible, with dynamic batching and Prometheus metrics.

Modules: :mod:`.settings` (flags and ``E5ONNX_*`` variables), :mod:`.body` (reading a body within the limits),
:mod:`.requests` and :mod:`.inputs` (body parsing and validation), :mod:`.pipeline` (a request through the
runtime, the result cache and the queue), :mod:`.cache` (the opt-in result cache), :mod:`.tokens` (``/tokenize``),
:mod:`.batcher` (merging requests into inference calls), :mod:`.errors` (HTTP errors and the status table),
:mod:`.state` (what the handlers share), :mod:`.handlers` (one function per route), :mod:`.app` (routes, the
wrapper every route runs in), :mod:`.metrics`, :mod:`.main` (uvicorn, signals, exit statuses).
"""
