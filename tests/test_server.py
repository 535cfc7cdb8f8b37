"""The HTTP server on loopback: the unmodified openai client, every bad input (each followed by a good request),
API key, 429, failure isolation, 32 concurrent clients against offline embeddings, metrics, settings, the fault
paths (client gone mid-body or while queued, a body that never completes, a dead batching task), and
``e5onnx serve`` itself: SIGTERM under load, past the graceful timeout, a port already taken.

Servers bind port 0 and report the port they got. Where a test needs requests to pile up, inference is held on
an Event (in a subprocess: until a byte arrives on its stdin) instead of hoping the machine is slow enough; waits
are for a definite condition, with a generous timeout. Every test is bounded in requests and time and stops its
server."""

import base64
import concurrent.futures
import gzip
import json
import logging
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the server extra is not installed (pip install 'e5onnx[server]')")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from e5onnx.errors import InvalidInputError  # noqa: E402
from e5onnx.runtime import Embedder  # noqa: E402
from e5onnx.server.app import create_app  # noqa: E402
from e5onnx.server.settings import ServerSettings, settings_from  # noqa: E402

from conftest import TINY_WORDS  # noqa: E402
from serving import TIMEOUT, Fake, serve, until  # noqa: E402


@pytest.fixture(scope="module")
def embedder(tiny512_export):
    return Embedder.load(tiny512_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def server(embedder):
    running = serve(embedder, max_client_batch_size=16, max_body_bytes=64 * 1024)
    yield running
    running.stop()


def _good(running):
    """A valid request succeeds: the server still answers after a bad one."""
    r = running.client.post("/v1/embeddings", json={"input": "hello world", "model": "x"})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["data"][0]["embedding"])
    assert np.abs(got - running.embedder.embed(["hello world"])[0]).max() <= 1e-6


def _words(rng, n):
    return " ".join(rng.choice(TINY_WORDS) for _ in range(n))


def _raw(running, head, body=b""):
    """A connected socket that has sent ``head`` (request line and headers, without the blank line) and ``body``."""
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT)
    sock.sendall(head.encode("ascii") + b"\r\n\r\n" + body)
    return sock


def _post_head(length):
    return (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}")


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
    ("token ids mixed with text", "/v1/embeddings", b'{"input": ["a", [5, 6]]}', 400, "input",
     r"^input\[1\] is a JSON array but input\[0\] is a string: one request holds texts or token-id arrays, not both$"),
    ("text mixed with token ids", "/embed", b'{"inputs": [[5, 6], "a"]}', 400, "inputs",
     r"^inputs\[1\] must be an array of token ids like inputs\[0\], got a JSON string"),
    ("token id not an integer", "/v1/embeddings", b'{"input": [[5, 6.0]]}', 400, "input",
     r"^input\[0\]: token id at position 1 must be an integer, got a JSON number$"),
    ("token id a boolean", "/v1/embeddings", b'{"input": [5, true]}', 400, "input",
     r"^'input' is an array of token ids but item 1 is a JSON boolean"),
    ("token id outside the vocabulary", "/v1/embeddings", b'{"input": [[5], [5, 99999]]}', 400, "input",
     r"^input\[1\]: token id 99999 at position 1 is not in the vocabulary \(0 to \d+\)$"),
    ("negative token id", "/embed", b'{"inputs": [5, -1]}', 400, "inputs",
     r"^inputs\[0\]: token id -1 at position 1 is not in the vocabulary"),
    ("empty token-id array", "/v1/embeddings", b'{"input": [[5], []]}', 400, "input",
     r"^input\[1\]: must be a non-empty list of token ids, got an empty one$"),
    ("over-long token ids", "/v1/embeddings", json.dumps({"input": [[5] * 10, [5] * 513]}).encode(), 400, "input",
     r"^input\[1\]: 513 tokens, over max_length 512, and truncation is off; send truncate: true to cut it$"),
    ("token ids with a prompt", "/embed", b'{"inputs": [5, 6], "prompt_name": "query"}', 400, "prompt_name",
     r"'prompt_name' cannot be used with token ids"),
    ("token ids with input_type", "/v1/embeddings", b'{"input": [[5, 6]], "input_type": "passage"}', 400,
     "input_type", r"'input_type' cannot be used with token ids"),
    ("a 5,000-digit integer", "/v1/embeddings", b'{"input": [[101, ' + b"9" * 5000 + b', 102]]}', 400, None,
     r"^the request body is not usable JSON: an integer of over 4,300 digits$"),
    ("token ids as windows", "/v1/embeddings", b'{"input": [[5, 6]], "truncate": "windows"}', 400, "truncate",
     r"^'truncate' \"windows\" cannot be used with token ids: windows are cut from a text's own tokens"),
    ("TEI token ids as windows", "/embed", b'{"inputs": [5, 6], "truncate": "WINDOWS"}', 400, "truncate",
     r"cannot be used with token ids"),
    ("token ids on /tokenize", "/tokenize", b'{"inputs": [[5, 6]]}', 400, "inputs",
     r"^inputs\[0\]: token ids are not accepted here; send the text$"),
    ("/tokenize without inputs", "/tokenize", b'{"input": "x"}', 400, "input", r"unknown field 'input'"),
    ("/tokenize empty string", "/tokenize", b'{"inputs": ["a", ""]}', 400, "inputs", r"inputs\[1\] is an empty"),
    ("/tokenize bad offset_units", "/tokenize", b'{"inputs": "x", "offset_units": "words"}', 400, "offset_units",
     r"must be one of bytes, chars"),
    ("/tokenize add_special_tokens not bool", "/tokenize", b'{"inputs": "x", "add_special_tokens": 1}', 400,
     "add_special_tokens", r"true or false"),
    ("/tokenize too many inputs", "/tokenize", json.dumps({"inputs": ["a"] * 17}).encode(), 400, "inputs",
     r"17 texts, over the limit of 16"),
    ("model not a string", "/v1/embeddings", b'{"input": "x", "model": 3}', 400, "model", r"'model' must be a string"),
    ("bad encoding_format", "/v1/embeddings", b'{"input": "x", "encoding_format": "int4"}', 400, "encoding_format",
     r"one of float, base64, int8, uint8, binary, ubinary, int8_base64, .*got 'int4'"),
    ("bad TEI encoding_format", "/embed", b'{"inputs": "x", "encoding_format": ["int8"]}', 400, "encoding_format",
     r"one of float, base64, .* got a JSON array"),
    ("int8 of raw vectors", "/embed", b'{"inputs": "x", "normalize": false, "encoding_format": "uint8"}', 400,
     "encoding_format", r"uint8 needs normalize true: its ranges were calibrated on unit vectors"),
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
    ("truncate not bool", "/embed", b'{"inputs": "x", "truncate": "yes"}', 400, "truncate",
     r"^'truncate' must be true, false or \"windows\", got 'yes'$"),
    ("truncate window", "/v1/embeddings", b'{"input": "x", "truncate": "window"}', 400, "truncate",
     r"^'truncate' must be true, false or \"windows\", got 'window'$"),
    ("truncate a number", "/embed", b'{"inputs": "x", "truncate": 1}', 400, "truncate",
     r"^'truncate' must be true, false or \"windows\", got a JSON number$"),
    ("left truncation", "/embed", b'{"inputs": "x", "truncation_direction": "Left"}', 400, "truncation_direction",
     r"left is not supported"),
    ("bad input_type", "/v1/embeddings", b'{"input": "x", "input_type": "document"}', 400, "input_type",
     r"one of query, passage"),
    ("over-long, truncate off", "/v1/embeddings", json.dumps({"input": ["ok", "paris " * 600]}).encode(), 400, "input",
     r"^input\[1\]: 602 tokens, over max_length 512, and truncation is off; send truncate: true to cut it, "
     r"or \"windows\" to embed it whole$"),
    ("over-long TEI", "/embed", json.dumps({"inputs": ["paris " * 600]}).encode(), 400, "inputs",
     r"^inputs\[0\]: 602 tokens, over max_length 512"),
    ("integer over 4300 digits", "/v1/embeddings", b'{"input": "x", "dimensions": ' + b"1" * 5000 + b"}", 400, None,
     r"not usable JSON"),
    ("lone surrogate field name", "/embed", b'{"inputs": "x", "\\ud800": 1}', 400, "\\ud800",
     r"unknown field '\\ud800'"),
    ("invisible-only string", "/v1/embeddings", '{"input": ["ok", "\u200b\ufeff"]}'.encode(), 400, "input",
     r"input\[1\] has no tokens"),
    ("duplicate field", "/v1/embeddings", b'{"input": "x", "model": "m", "input": "y"}', 400, "input",
     r"field 'input' is given twice in one JSON object"),
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


def test_a_compressed_body_is_415_and_identity_is_accepted(server):
    body = b'{"input": "x"}'
    r = server.client.post("/v1/embeddings", content=gzip.compress(body), headers={"content-encoding": "gzip"})
    assert r.status_code == 415, r.text
    assert r.json()["error"]["message"].startswith("unsupported Content-Encoding 'gzip'")
    assert server.client.post("/v1/embeddings", content=body, headers={"content-encoding": "identity"}).status_code == 200
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
                              "max_body_bytes": 65536, "body_timeout_s": 30}
    assert info["version"] and info["api_key_required"] is False
    models = server.client.get("/v1/models").json()
    assert models["data"][0]["id"] == "tiny-model"


def test_metrics_count_requests_and_batches(embedder):
    running = serve(embedder)
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
    running = serve(embedder, api_key_env="TEST_E5_KEY")
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
    running = serve(embedder, cors_origins="https://example.com")
    try:
        r = running.client.get("/health", headers=headers)
        assert r.headers["access-control-allow-origin"] == "https://example.com"
    finally:
        running.stop()


# -- queue limit, failure isolation, faults --------------------------------------------------------------------

def test_full_queue_answers_429_at_once(embedder):
    fake = Fake(embedder)
    running = serve(fake, max_queue=2)
    try:
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = [pool.submit(running.client.post, "/v1/embeddings", json={"input": "paris"}) for _ in range(2)]
            until(lambda: running.state.pending == 2, "2 requests are admitted")
            for body in ({"input": "paris"}, {"input": ["paris", "city"]}):
                r = running.client.post("/v1/embeddings", json=body)  # answered while inference is still shut
                assert r.status_code == 429 and r.headers["retry-after"] == "1"
                assert r.json()["error"]["type"] == "rate_limit_error"
            assert not fake.gate.is_set()
            fake.gate.set()
            assert [f.result(TIMEOUT).status_code for f in held] == [200, 200]
        _good(running)
    finally:
        fake.gate.set()
        running.stop()


def test_health_answers_at_once_while_the_queue_is_busy(embedder):
    fake = Fake(embedder)
    running = serve(fake)
    try:
        fake.shut()  # inference calls of the batcher now wait; /health embeds on a thread of its own
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(running.client.post, "/v1/embeddings", json={"input": ["paris", "city"]})
            assert fake.entered.wait(TIMEOUT)
            assert running.client.get("/health").json() == {"status": "ok"}
            assert not held.done()
            fake.gate.set()
            assert held.result(TIMEOUT).status_code == 200
    finally:
        fake.gate.set()
        running.stop()


def test_a_client_that_goes_away_is_dropped_from_the_queue(embedder):
    fake = Fake(embedder)
    running = serve(fake)
    try:
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(running.client.post, "/v1/embeddings", json={"input": ["paris"] * 3})
            assert fake.entered.wait(TIMEOUT)  # the first request is in the inference call, waiting on the gate
            body = json.dumps({"input": ["city"] * 5}).encode()
            with _raw(running, _post_head(len(body)), body):  # a second request, queued, whose client goes away
                until(lambda: running.state.pending == 2, "the second request is queued")
            until(lambda: running.count(499) == 1, "the server notices the client is gone")
            fake.gate.set()
            assert held.result(TIMEOUT).status_code == 200
        _good(running)
        assert [3] in fake.calls and not any(5 in call for call in fake.calls)  # the abandoned texts never ran
    finally:
        fake.gate.set()
        running.stop()


def test_a_client_that_goes_away_mid_body_is_499_not_an_error(embedder, caplog):
    caplog.set_level(logging.INFO)
    running = serve(embedder)
    try:
        with _raw(running, _post_head(1000), b'{"input": "par'):
            pass  # closed with 986 bytes of the body unsent
        until(lambda: running.count(499) == 1, "the disconnect is counted")
        assert running.count(500) == 0
        _good(running)
    finally:
        running.stop()
    assert "closed its connection before its request was read whole" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_body_that_never_completes_gets_408(embedder):
    running = serve(embedder, body_timeout_s=1)
    try:
        with _raw(running, _post_head(100), b'{"input": ') as sock:
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # until the server closes the connection
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == 408 and "not complete within 1 s (--body-timeout-s)" in error["message"]
        _good(running)
    finally:
        running.stop()


def test_a_failing_request_affects_only_itself(embedder):
    fake = Fake(embedder, bad=embedder.tokenize(["robots"])[0][1])
    running = serve(fake)
    bodies = [{"input": ["paris", "robots"]}] + [{"input": ["paris", f"city {i}"]} for i in range(7)]
    try:
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            first = pool.submit(running.client.post, "/v1/embeddings", json={"input": ["hello", "world"]})
            assert fake.entered.wait(TIMEOUT)
            results = [pool.submit(running.client.post, "/v1/embeddings", json=b) for b in bodies]
            until(lambda: running.state.pending == 9, "8 requests are queued behind the first")
            fake.gate.set()
            results = [f.result(TIMEOUT) for f in [first] + results]
    finally:
        fake.gate.set()
        running.stop()
    assert fake.calls[1] == [2] * 8  # the 8 queued requests were merged into one call, which failed ...
    assert results[1].status_code == 500 and "synthetic failure" in results[1].json()["error"]["message"]
    assert [r.status_code for r in results[:1] + results[2:]] == [200] * 8  # ... and retried one by one
    want = embedder.embed(["paris", "city 3"])
    assert np.abs(np.array([d["embedding"] for d in results[5].json()["data"]]) - want).max() <= 1e-6


def test_a_dead_batching_task_answers_503_at_once(embedder, caplog):
    fake = Fake(embedder)
    running = serve(fake)
    try:
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(running.client.post, "/v1/embeddings", json={"input": ["paris", "city"]})
            assert fake.entered.wait(TIMEOUT)
            queued = pool.submit(running.client.post, "/v1/embeddings", json={"input": "paris"})
            until(lambda: running.state.pending == 2, "a second request is queued")

            def broken():
                raise RuntimeError("synthetic batcher bug")
            running.state.batcher._take = broken  # the loop raises when it next looks at the queue
            fake.gate.set()
            assert first.result(TIMEOUT).status_code == 200
            r = queued.result(TIMEOUT)
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        assert "batching task stopped" in r.json()["error"]["message"]
        assert running.client.post("/v1/embeddings", json={"input": "paris"}).status_code == 503
        health = running.client.get("/health")
        assert health.status_code == 503 and "batching task stopped" in health.json()["error"]["message"]
    finally:
        fake.gate.set()
        running.stop()
    assert "the batching task stopped (RuntimeError)" in caplog.text


# -- concurrency ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,tolerance", [("fp32", 1e-6), ("int8", 1e-6)])
def test_32_concurrent_clients_get_their_own_vectors(tiny512_export, variant, tolerance):
    """Random batches of 1-16 texts of 1-512 tokens from 32 clients; every vector equals the offline one.
    Inference is held until 32 requests are admitted, so the 31 queued behind the first are merged into shared
    calls (any two fit in the default 16384 tokens). int8 is batch-invariant (per-token activation scales), so
    the same tolerance holds."""
    e = Embedder.load(tiny512_export, variant=variant, threads=1)
    fake = Fake(e)
    running = serve(fake)
    rng = random.Random(7)
    bodies = [[_words(rng, rng.randint(1, 510)) for _ in range(rng.randint(1, 16))] for _ in range(48)]
    try:
        def client(body):
            with httpx.Client(base_url=running.url, timeout=TIMEOUT) as c:
                return c.post("/v1/embeddings", json={"input": body, "truncate": True})
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(client, body) for body in bodies]
            until(lambda: running.state.pending == 32, "32 requests are admitted")
            fake.gate.set()
            results = [f.result(TIMEOUT) for f in futures]
    finally:
        fake.gate.set()
        running.stop()
    for body, r in zip(bodies, results):
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        assert np.abs(got - e.embed(body)).max() <= tolerance
    assert len(fake.calls[1]) > 1  # the first call after the hold merged several requests


# -- settings and the command line --------------------------------------------------------------------------

def test_settings_from_flags_environment_and_defaults():
    env = {"E5ONNX_PORT": "9001", "E5ONNX_MAX_QUEUE": "7", "E5ONNX_MODEL": "some/model", "E5ONNX_BODY_TIMEOUT_S": "5"}
    s = settings_from({"port": None, "max_queue": 3}, env)
    assert (s.model, s.port, s.max_queue, s.host, s.body_timeout_s) == ("some/model", 9001, 3, "127.0.0.1", 5)
    with pytest.raises(InvalidInputError, match="E5ONNX_PORT='abc' is not a whole number"):
        settings_from({"model": "m"}, {"E5ONNX_PORT": "abc"})
    with pytest.raises(InvalidInputError, match="max_queue must be a whole number >= 1"):
        settings_from({"model": "m", "max_queue": 0}, {})
    with pytest.raises(InvalidInputError, match="body_timeout_s must be a whole number >= 1"):
        settings_from({"model": "m", "body_timeout_s": 0}, {})
    with pytest.raises(InvalidInputError, match="no model"):
        settings_from({}, {})


#: ``e5onnx serve`` whose inference calls of more than one text (not the one-text start-up check) wait until a
#: byte arrives on stdin; it says so on stderr.
GATED_SERVE = r"""
import sys, threading
from e5onnx.runtime import Embedder

opened, real = threading.Event(), Embedder.run
threading.Thread(target=lambda: sys.stdin.buffer.read(1) and opened.set(), daemon=True).start()


def run(self, prepared, *args, **kwargs):
    if sum(len(p) for p in prepared) > 1 and not opened.is_set():
        print("test: inference is held", file=sys.stderr, flush=True)
        opened.wait()
    return real(self, prepared, *args, **kwargs)


Embedder.run = run
from e5onnx.cli import main

sys.exit(main(sys.argv[1:]))
"""


class Process:
    """``e5onnx serve MODEL --port 0 ...`` with held inference (:data:`GATED_SERVE`) in a subprocess; the port is
    read back from its start-up log line. ``log`` holds every line of its stderr so far."""

    def __init__(self, model, *flags):
        env = {**os.environ, "E5ONNX_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", GATED_SERVE, "serve", str(model), "--port", "0",
                                      "--variant", "fp32", *flags], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log, self._lines = [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        port = re.search(r"on http://127\.0\.0\.1:(\d+) ", self.wait_for("e5onnx serving")).group(1)
        self.url = f"http://127.0.0.1:{port}"

    def _read(self):
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text):
        """The first log line from now on holding ``text``."""
        while True:
            line = self._lines.get(timeout=TIMEOUT)
            assert line is not None, f"the server ended before logging {text!r}:\n{''.join(self.log)}"
            self.log.append(line)
            if text in line:
                return line

    def open_inference(self):
        self.proc.stdin.write("x")
        self.proc.stdin.flush()

    def exit_status(self):
        """The exit status, once the process has ended and its whole log is in :attr:`log`."""
        status = self.proc.wait(TIMEOUT)
        for line in iter(lambda: self._lines.get(timeout=TIMEOUT), None):
            self.log.append(line)
        return status

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


def _queue_depth(url):
    text = httpx.get(url + "/metrics", timeout=TIMEOUT).text
    return float(re.search(r"^e5onnx_queue_depth (\S+)$", text, re.M).group(1))


def test_sigterm_under_load_loses_no_accepted_request(tiny512_export):
    """48 requests are admitted while inference is held (one in the inference call, 47 queued), SIGTERM comes,
    then inference goes on: every one is answered in full, and the process exits with status 0."""
    server = Process(tiny512_export)
    rng = random.Random(3)
    bodies = [[_words(rng, rng.randint(5, 40)) for _ in range(16)] for _ in range(48)]

    def client(body):
        with httpx.Client(timeout=TIMEOUT) as c:
            r = c.post(server.url + "/v1/embeddings", json={"input": body})
        return r.status_code, len(r.json()["data"]) if r.status_code == 200 else r.text
    try:
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(client, b) for b in bodies]
            until(lambda: _queue_depth(server.url) == len(bodies), "every request is admitted")
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for("shutting down: requests still running in 30 s get 503")
            server.open_inference()
            results = [f.result(TIMEOUT) for f in futures]
        assert server.exit_status() == 0, "".join(server.log)
    finally:
        server.kill()
    assert results == [(200, 16)] * len(bodies)


def test_requests_past_the_graceful_timeout_get_503_and_the_process_exits_1(tiny512_export):
    """Inference is held for ever; after SIGTERM and --graceful-timeout-s 1 the request gets a JSON 503, and the
    process exits with status 1 although the inference call never returns, with no traceback in its log."""
    server = Process(tiny512_export, "--graceful-timeout-s", "1")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.post, server.url + "/v1/embeddings", json={"input": ["paris", "city"]},
                               timeout=TIMEOUT)
            server.wait_for("test: inference is held")
            server.proc.send_signal(signal.SIGTERM)
            r = held.result(TIMEOUT)
        assert server.exit_status() == 1, "".join(server.log)
    finally:
        server.kill()
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["type"] == "service_unavailable" and error["message"].startswith("the server is shutting down")
    log = "".join(server.log)
    assert "Traceback" not in log and "exiting with status 1: 1 request(s) were still running" in log


def test_serve_exits_3_when_the_port_is_taken(tiny512_export):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "e5onnx.cli", "serve", str(tiny512_export), "--port", str(port)],
                           capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert r.returncode == 3, r.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


def test_serve_without_a_model_is_a_clear_error():

    env = {k: v for k, v in os.environ.items() if k != "E5ONNX_MODEL"}
    r = subprocess.run([sys.executable, "-m", "e5onnx.cli", "serve"], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 2 and "no model" in r.stderr  # a usage error


def test_real_minilm_export_answers_the_openai_client(minilm_export):
    """Issue 4's "done when": ``e5onnx serve`` on the real MiniLM export answers the unmodified openai client."""
    openai = pytest.importorskip("openai")
    e = Embedder.load(minilm_export, variant="auto", threads=1)
    running = serve(e)
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
