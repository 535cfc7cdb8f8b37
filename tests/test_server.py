"""The HTTP server on loopback: the unmodified openai client, every bad input (each followed by a good request),
API key, 429, failure isolation, 32 concurrent clients against offline embeddings, metrics, settings, and a
SIGTERM under load. Every test is bounded in requests and time and stops its server."""

import base64
import concurrent.futures
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the server extra is not installed (pip install 'e5onnx[server]')")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from e5onnx.errors import E5OnnxError, InvalidInputError  # noqa: E402
from e5onnx.runtime import Embedder  # noqa: E402
from e5onnx.server.app import create_app  # noqa: E402
from e5onnx.server.settings import ServerSettings, settings_from  # noqa: E402

from conftest import TINY_WORDS, build_bert, build_tiny_tokenizer  # noqa: E402

TIMEOUT = 60  # seconds: no request of these tests may take longer


@pytest.fixture(scope="module")
def tiny512_export(tmp_path_factory):
    """A 2-layer, hidden-32 random BERT with 512 positions (lengths 1-512 as e5-small), fp32 + int8."""
    from e5onnx.export import export_model

    src = tmp_path_factory.mktemp("tiny512-bert")
    vocab_size = build_tiny_tokenizer(src)
    build_bert(src, seed=1, vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512)
    out = tmp_path_factory.mktemp("tiny512") / "m"
    export_model(str(src), out, quantize="int8", max_length=512)
    return out


class Running:
    """A uvicorn server for ``app`` on a free loopback port, in a thread; ``stop()`` ends it."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=TIMEOUT)

    def stop(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


def _serve(embedder, **settings):
    return Running(create_app(embedder, ServerSettings(model="tiny", **settings), "tiny-model"))


@pytest.fixture(scope="module")
def embedder(tiny512_export):
    return Embedder.load(tiny512_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def server(embedder):
    running = _serve(embedder, max_client_batch_size=16, max_body_bytes=64 * 1024)
    yield running
    running.stop()


def _good(server):
    """A valid request succeeds: the server still answers after a bad one."""
    r = server.client.post("/v1/embeddings", json={"input": "hello world", "model": "x"})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) == 384 or len(r.json()["data"][0]["embedding"]) > 0


def _words(rng, n):
    return " ".join(rng.choice(TINY_WORDS) for _ in range(n))


# -- the openai client, unmodified --------------------------------------------------------------------------

def test_openai_client_string_list_and_base64(server, embedder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
    texts = ["query: how much protein should a female eat", "passage: " + "the city of paris " * 40, "東京"]
    want = embedder.embed(texts)
    one = client.embeddings.create(model="tiny-model", input=texts[0], encoding_format="float")
    assert np.abs(np.array(one.data[0].embedding) - want[0]).max() <= 1e-6
    assert one.usage.prompt_tokens == len(embedder.tokenize(texts[0])[0])
    many = client.embeddings.create(model="tiny-model", input=texts, encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    assert np.abs(np.array([d.embedding for d in many.data]) - want).max() <= 1e-6
    assert many.usage.prompt_tokens == many.usage.total_tokens == sum(len(r) for r in embedder.tokenize(texts))
    b64 = client.embeddings.create(model="tiny-model", input=texts, encoding_format="base64")
    got = np.array([d.embedding for d in b64.data])  # the client decodes base64 itself
    if got.dtype.kind in "US" or isinstance(b64.data[0].embedding, str):
        got = np.stack([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in b64.data])
    assert np.abs(got - want).max() <= 1e-6
    default = client.embeddings.create(model="tiny-model", input=texts)  # the client's default format
    assert np.abs(np.array([d.embedding for d in default.data]) - want).max() <= 1e-6
    prefixed = client.embeddings.create(model="tiny-model", input=["how long do cats sleep"],
                                        extra_body={"input_type": "query"}, encoding_format="float")
    assert np.abs(np.array(prefixed.data[0].embedding) - embedder.embed_queries(["how long do cats sleep"])[0]).max() <= 1e-6


def test_tei_embed_route(server, embedder):
    r = server.client.post("/embed", json={"inputs": ["paris", "city of paris"], "prompt_name": "passage"})
    assert r.status_code == 200
    assert np.abs(np.array(r.json()) - embedder.embed_passages(["paris", "city of paris"])).max() <= 1e-6
    raw = np.array(server.client.post("/embed", json={"inputs": "paris", "normalize": False}).json()[0])
    assert abs(np.linalg.norm(raw) - 1) > 1e-3  # not normalised ...
    assert np.abs(raw / np.linalg.norm(raw) - embedder.embed(["paris"])[0]).max() <= 1e-6  # ... same direction
    single = server.client.post("/embed", json={"inputs": "paris"}).json()
    assert len(single) == 1 and len(single[0]) == len(raw)


def test_truncate_true_cuts_long_texts(server, embedder):
    long = "paris " * 700
    r = server.client.post("/v1/embeddings", json={"input": [long], "truncate": True})
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == 512
    assert np.abs(np.array(r.json()["data"][0]["embedding"]) - embedder.embed([long])[0]).max() <= 1e-6


# -- bad input: 4xx with an OpenAI-style error, and the next request succeeds --------------------------------

BAD = [
    ("malformed JSON", "/v1/embeddings", b'{"input": "x"', 400, None, r"not valid JSON.*line 1 column"),
    ("not an object", "/v1/embeddings", b'["x"]', 400, None, r"must be a JSON object, got a JSON array"),
    ("empty body", "/v1/embeddings", b"", 400, None, r"body is empty"),
    ("input missing", "/v1/embeddings", b'{"model": "m"}', 400, "input", r"'input' is required"),
    ("input a number", "/v1/embeddings", b'{"input": 5}', 400, "input", r"string or an array of strings"),
    ("item not a string", "/v1/embeddings", b'{"input": ["a", null]}', 400, "input", r"input\[1\] must be a string"),
    ("token arrays", "/v1/embeddings", b'{"input": [[1, 2]]}', 400, "input", r"input\[0\]: token-id arrays"),
    ("model not a string", "/v1/embeddings", b'{"input": "x", "model": 3}', 400, "model", r"'model' must be a string"),
    ("bad encoding_format", "/v1/embeddings", b'{"input": "x", "encoding_format": "int8"}', 400, "encoding_format",
     r"one of float, base64"),
    ("empty input list", "/v1/embeddings", b'{"input": []}', 400, "input", r"empty array"),
    ("empty string", "/v1/embeddings", b'{"input": ["a", ""]}', 400, "input", r"input\[1\] is an empty"),
    ("whitespace string", "/embed", b'{"inputs": " \\n "}', 400, "inputs", r"inputs\[0\] is an empty or whitespace"),
    ("too many inputs", "/v1/embeddings", json.dumps({"input": ["a"] * 17}).encode(), 400, "input",
     r"17 texts, over the limit of 16"),
    ("invalid UTF-8", "/v1/embeddings", b'{"input": "caf\xe9"}', 400, None, r"not valid UTF-8 \(byte 14\)"),
    ("lone surrogate", "/v1/embeddings", b'{"input": ["ok", "a\\udc00b"]}', 400, "input",
     r"input\[1\] holds a lone surrogate \(\\udc00\) at character 1"),
    ("unknown field", "/v1/embeddings", b'{"input": "x", "encoding-format": "float"}', 400, "encoding-format",
     r"unknown field 'encoding-format'"),
    ("unknown TEI field", "/embed", b'{"inputs": "x", "input": "y"}', 400, "input", r"unknown field 'input'"),
    ("wrong dimensions", "/v1/embeddings", b'{"input": "x", "dimensions": 256}', 400, "dimensions",
     r"must be \d+ for this model.*got 256"),
    ("dimensions not int", "/embed", b'{"inputs": "x", "dimensions": "32"}', 400, "dimensions", r"must be an integer"),
    ("truncate not bool", "/embed", b'{"inputs": "x", "truncate": "yes"}', 400, "truncate", r"true or false"),
    ("left truncation", "/embed", b'{"inputs": "x", "truncation_direction": "Left"}', 400, "truncation_direction",
     r"left is not supported"),
    ("bad input_type", "/v1/embeddings", b'{"input": "x", "input_type": "document"}', 400, "input_type",
     r"one of query, passage"),
    ("over-long, truncate off", "/v1/embeddings", json.dumps({"input": ["ok", "paris " * 600]}).encode(), 400, "input",
     r"input\[1\]: 602 tokens, over max_length 512, and truncation is off"),
    ("over-long TEI", "/embed", json.dumps({"inputs": ["paris " * 600]}).encode(), 400, "inputs",
     r"inputs\[0\]: 602 tokens"),
    ("integer over 4300 digits", "/v1/embeddings", b'{"input": "x", "dimensions": ' + b"1" * 5000 + b"}", 400, None,
     r"not usable JSON"),
    ("lone surrogate field name", "/embed", b'{"inputs": "x", "\\ud800": 1}', 400, "\\ud800",
     r"unknown field '\\ud800'"),
    ("invisible-only string", "/v1/embeddings", '{"input": ["ok", "\u200b\ufeff"]}'.encode(), 400, "input",
     r"input\[1\] has no tokens"),
    ("body too large", "/v1/embeddings", json.dumps({"input": ["paris " * 11000]}).encode(), 413, None,
     r"over the limit of 65536 bytes"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_a_4xx_and_the_server_still_answers(server, case):
    _, route, body, status, param, message = case
    r = server.client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == status
    assert re.search(message, error["message"]), error["message"]
    _good(server)


def test_content_type_must_be_json_or_absent(server):
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        r = server.client.post("/v1/embeddings", content=b'{"input": "x"}', headers={"content-type": content_type})
        assert r.status_code == 415 and content_type in r.json()["error"]["message"]
    ok = server.client.post("/v1/embeddings", content=b'{"input": "x"}',
                            headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
    _good(server)


def test_body_too_large_without_content_length(server):
    def chunks():  # chunked transfer: no Content-Length, refused while streaming
        for _ in range(100):
            yield b"x" * 1024
    r = server.client.post("/v1/embeddings", content=chunks())
    assert r.status_code == 413 and "over the limit" in r.json()["error"]["message"]
    _good(server)


def test_unknown_route_and_method(server):
    r = server.client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = server.client.get("/v1/embeddings")
    assert r.status_code == 405 and "GET /v1/embeddings" in r.json()["error"]["message"]
    assert r.headers["allow"] == "POST"
    _good(server)


def test_user_text_never_reaches_the_logs(server, caplog):
    caplog.set_level("DEBUG")
    secret = "SECRET-USER-TEXT \x1b[31m"
    server.client.post("/v1/embeddings", json={"input": [secret, ""]})
    server.client.post("/v1/embeddings", json={"input": secret, "bogus": secret})
    server.client.post("/v1/embeddings", json={"input": secret})
    assert "SECRET-USER-TEXT" not in caplog.text


# -- health, info, metrics ---------------------------------------------------------------------------------

def test_health_info_models(server, embedder):
    assert server.client.get("/health").json() == {"status": "ok"}
    info = server.client.get("/info").json()
    assert info["variant"] == "fp32" and info["embedding_dim"] == embedder.dim and info["max_input_length"] == 512
    assert info["limits"] == {"max_batch_tokens": 16384, "max_client_batch_size": 16, "max_queue": 512,
                              "max_body_bytes": 65536}
    assert info["version"] and info["api_key_required"] is False
    models = server.client.get("/v1/models").json()
    assert models["data"][0]["id"] == "tiny-model"


def test_metrics_count_requests_and_batches(embedder):
    running = _serve(embedder)
    try:
        for _ in range(3):
            running.client.post("/v1/embeddings", json={"input": ["paris", "city"]})
        running.client.post("/v1/embeddings", json={"input": []})
        text = running.client.get("/metrics").text
    finally:
        running.stop()
    value = lambda name: float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))  # noqa: E731
    assert value('e5onnx_requests_total{route="/v1/embeddings",status="200"}') == 3
    assert value('e5onnx_requests_total{route="/v1/embeddings",status="400"}') == 1
    for name in ("e5onnx_queue_seconds_count", "e5onnx_inference_seconds_count", "e5onnx_batch_size_count"):
        assert value(name) >= 3  # the start-up check counts too
    assert value("e5onnx_tokenize_seconds_count") == 3
    assert value('e5onnx_request_seconds_count{route="/v1/embeddings"}') == 4
    assert value("e5onnx_batch_tokens_sum") >= 3 * 5
    assert value("e5onnx_queue_depth") == 0


# -- security ------------------------------------------------------------------------------------------------

def test_api_key(embedder, monkeypatch):
    monkeypatch.setenv("TEST_E5_KEY", "s3cret-key")
    running = _serve(embedder, api_key_env="TEST_E5_KEY")
    try:
        c = running.client
        assert c.post("/v1/embeddings", json={"input": "x"}).status_code == 401
        r = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401 and c.get("/info").status_code == 401
        assert c.get("/health").status_code == 200  # probes need no key
        ok = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200
    finally:
        running.stop()
    monkeypatch.setenv("TEST_E5_KEY", "")
    with pytest.raises(InvalidInputError, match="TEST_E5_KEY"):
        create_app(embedder, ServerSettings(model="tiny", api_key_env="TEST_E5_KEY"))


def test_cors_is_off_unless_asked(server, embedder):
    headers = {"Origin": "https://example.com"}
    assert "access-control-allow-origin" not in server.client.get("/health", headers=headers).headers
    running = _serve(embedder, cors_origins="https://example.com")
    try:
        r = running.client.get("/health", headers=headers)
        assert r.headers["access-control-allow-origin"] == "https://example.com"
    finally:
        running.stop()


# -- queue limit and failure isolation ------------------------------------------------------------------------

class _Slow:
    """An embedder whose inference waits on an event, so requests pile up in the queue."""

    def __init__(self, inner):
        self.inner, self.gate = inner, threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_token_ids(self, rows, **kw):
        assert self.gate.wait(TIMEOUT)
        return self.inner.embed_token_ids(rows, **kw)


def test_full_queue_answers_429_at_once(embedder):
    slow = _Slow(embedder)
    running = _serve(slow, max_queue=2)
    try:
        slow.gate.clear()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = [pool.submit(running.client.post, "/v1/embeddings", json={"input": "paris"}) for _ in range(2)]
            deadline = time.monotonic() + TIMEOUT
            while running.server.config.app.state.e5onnx.pending < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for body in ({"input": "paris"}, {"input": ["paris", "city"]}):
                t0 = time.monotonic()
                r = running.client.post("/v1/embeddings", json=body)
                assert r.status_code == 429 and r.headers["retry-after"] == "1"
                assert r.json()["error"]["type"] == "rate_limit_error"
                assert time.monotonic() - t0 < 5  # at once, not after the queue drains
            slow.gate.set()
            assert [f.result(TIMEOUT).status_code for f in held] == [200, 200]
        _good(running)
    finally:
        slow.gate.set()
        running.stop()


def test_health_answers_at_once_while_the_queue_is_busy(embedder):
    slow = _Slow(embedder)
    real = slow.embed_token_ids
    slow.embed_token_ids = lambda rows, **kw: real(rows, **kw) if len(rows) > 1 else embedder.embed_token_ids(rows, **kw)
    running = _serve(slow)
    try:
        slow.gate.clear()  # inference calls of 2+ texts now wait; the health check embeds 1 text
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(running.client.post, "/v1/embeddings", json={"input": ["paris", "city"]})
            deadline = time.monotonic() + TIMEOUT
            while running.server.config.app.state.e5onnx.pending < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            t0 = time.monotonic()
            assert running.client.get("/health").json() == {"status": "ok"}
            assert time.monotonic() - t0 < 5 and not held.done()
            slow.gate.set()
            assert held.result(TIMEOUT).status_code == 200
    finally:
        slow.gate.set()
        running.stop()


def test_a_client_that_goes_away_is_dropped_from_the_queue(embedder):
    slow = _Slow(embedder)
    seen = []
    real = slow.embed_token_ids
    slow.embed_token_ids = lambda rows, **kw: seen.append(len(rows)) or real(rows, **kw)
    running = _serve(slow)
    try:
        slow.gate.clear()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(running.client.post, "/v1/embeddings", json={"input": ["paris"] * 3})
            deadline = time.monotonic() + TIMEOUT
            while not seen:  # the first request is in the inference call, waiting on the gate
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with pytest.raises(httpx.ReadTimeout):  # a second request, whose client gives up while it is queued
                httpx.post(running.url + "/v1/embeddings", json={"input": ["city"] * 5}, timeout=1.0)
            time.sleep(1.0)  # the server notices within DISCONNECT_POLL_S
            slow.gate.set()
            assert held.result(TIMEOUT).status_code == 200
        _good(running)
        assert 5 not in seen  # the abandoned texts never reached inference
        text = running.client.get("/metrics").text
        assert 'e5onnx_requests_total{route="/v1/embeddings",status="499"} 1.0' in text
    finally:
        slow.gate.set()
        running.stop()


class _Failing:
    """An embedder that fails on any batch holding the token id ``bad``."""

    def __init__(self, inner, bad):
        self.inner, self.bad = inner, bad

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_token_ids(self, rows, **kw):
        if any(self.bad in r for r in rows):
            raise E5OnnxError("synthetic failure")
        return self.inner.embed_token_ids(rows, **kw)


def test_a_failing_request_affects_only_itself(embedder):
    bad = embedder.tokenize(["robots"])[0][1]
    running = _serve(_Failing(embedder, bad))
    try:
        bodies = [{"input": ["paris", "robots"]}] + [{"input": ["paris", f"city {i}"]} for i in range(7)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda b: running.client.post("/v1/embeddings", json=b), bodies))
        assert results[0].status_code == 500 and "synthetic failure" in results[0].json()["error"]["message"]
        assert [r.status_code for r in results[1:]] == [200] * 7
        want = embedder.embed(["paris", "city 3"])
        assert np.abs(np.array([d["embedding"] for d in results[4].json()["data"]]) - want).max() <= 1e-6
    finally:
        running.stop()


# -- concurrency ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,tolerance", [("fp32", 1e-6), ("int8", 1e-6)])
def test_32_concurrent_clients_get_their_own_vectors(tiny512_export, variant, tolerance):
    """Random batches of 1-16 texts of 1-512 tokens from 32 clients; every vector equals the offline one.
    int8 is batch-invariant (per-token activation scales), so the same tolerance holds."""
    e = Embedder.load(tiny512_export, variant=variant, threads=1)
    running = _serve(e, max_batch_tokens=4096)
    rng = random.Random(7)
    bodies = [[_words(rng, rng.randint(1, 510)) for _ in range(rng.randint(1, 16))] for _ in range(64)]
    try:
        def client(body):
            with httpx.Client(base_url=running.url, timeout=TIMEOUT) as c:
                return c.post("/v1/embeddings", json={"input": body, "truncate": True})
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(client, bodies))
        batches = running.client.get("/metrics").text
    finally:
        running.stop()
    for body, r in zip(bodies, results):
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        assert np.abs(got - e.embed(body)).max() <= tolerance
    merged = float(re.search(r"^e5onnx_batch_size_sum (\S+)$", batches, re.M).group(1))
    calls = float(re.search(r"^e5onnx_batch_size_count (\S+)$", batches, re.M).group(1))
    assert merged / calls > 1  # requests were merged into shared inference calls


# -- settings and the command line --------------------------------------------------------------------------

def test_settings_from_flags_environment_and_defaults():
    env = {"E5ONNX_PORT": "9001", "E5ONNX_MAX_QUEUE": "7", "E5ONNX_MODEL": "some/model"}
    s = settings_from({"port": None, "max_queue": 3}, env)
    assert (s.model, s.port, s.max_queue, s.host) == ("some/model", 9001, 3, "127.0.0.1")  # a flag wins
    with pytest.raises(InvalidInputError, match="E5ONNX_PORT='abc' is not a whole number"):
        settings_from({"model": "m"}, {"E5ONNX_PORT": "abc"})
    with pytest.raises(InvalidInputError, match="max_queue must be a whole number >= 1"):
        settings_from({"model": "m", "max_queue": 0}, {})
    with pytest.raises(InvalidInputError, match="no model"):
        settings_from({}, {})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(text, name):
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_sigterm_under_load_loses_no_accepted_request(tiny512_export):
    """48 requests are read by the server (admitted: answered or in its queue), SIGTERM comes while many are
    still queued, and every one of them is answered in full; then the process exits with status 0."""
    port = _free_port()
    env = {**os.environ, "E5ONNX_THREADS": "1", "E5ONNX_MAX_BATCH_TOKENS": "2048"}
    proc = subprocess.Popen([sys.executable, "-m", "e5onnx.cli", "serve", str(tiny512_export), "--port", str(port),
                             "--variant", "fp32"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    route = 'e5onnx_requests_total{route="/v1/embeddings",status="200"}'
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        rng = random.Random(3)
        bodies = [[_words(rng, rng.randint(300, 500)) for _ in range(16)] for _ in range(48)]

        def client(body):
            with httpx.Client(timeout=TIMEOUT) as c:
                r = c.post(url + "/v1/embeddings", json={"input": body, "truncate": True})
            return r.status_code, len(r.json()["data"]) if r.status_code == 200 else r.text
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(client, b) for b in bodies]
            with httpx.Client(base_url=url, timeout=TIMEOUT) as watcher:
                while True:  # until the server has read every request
                    metrics = watcher.get("/metrics").text
                    queued = _metric(metrics, "e5onnx_queue_depth")
                    if _metric(metrics, route) + queued >= len(bodies):
                        break
                    assert time.monotonic() < deadline + TIMEOUT, "requests were not admitted"
                    time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            results = [f.result(TIMEOUT) for f in futures]
        assert proc.wait(TIMEOUT) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert queued >= 8, f"only {queued} requests were in flight at SIGTERM: the test would prove little"
    assert results == [(200, 16)] * len(bodies)


def test_serve_without_a_model_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "E5ONNX_MODEL"}
    r = subprocess.run([sys.executable, "-m", "e5onnx.cli", "serve"], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 2 and "no model" in r.stderr  # a usage error


def test_real_minilm_export_answers_the_openai_client(minilm_export):
    """Issue 4's "done when": ``e5onnx serve`` on the real MiniLM export answers the unmodified openai client."""
    openai = pytest.importorskip("openai")
    e = Embedder.load(minilm_export, variant="auto", threads=1)
    running = _serve(e)
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        texts = ["how much protein should a female eat", "As a general guideline, the CDC's average requirement "
                 "of protein for women ages 19 to 70 is 46 grams per day."]
        out = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, extra_body={"input_type": "query"})
        got = np.array([d.embedding for d in out.data])
        assert np.abs(got - e.embed_queries(texts)).max() <= 1e-6
        assert float(got[0] @ got[1]) > 0.5  # a real model: the answer is close to its question
    finally:
        running.stop()
