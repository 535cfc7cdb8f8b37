"""The server's ``truncate: "windows"`` and compact ``encoding_format`` on both routes, against the in-process
Embedder, with the unmodified openai client; and what a model folder without ranges answers."""

import base64
import concurrent.futures

import httpx
import numpy as np
import pytest

pytest.importorskip("starlette", reason="the server extra is not installed (pip install 'e5onnx[server]')")
pytest.importorskip("httpx")

from serving import TIMEOUT, Fake, serve, until  # noqa: E402
from test_server import _good  # noqa: E402

from e5onnx.runtime import Embedder  # noqa: E402

LONG = "paris city hello world " * 100  # 402 tokens: 4 windows of the tiny export's 128
FORMS = ("int8", "uint8", "binary", "ubinary")


@pytest.fixture(scope="module")
def embedder(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def server(embedder):
    running = serve(embedder)
    yield running
    running.stop()


def test_truncate_windows_on_both_routes_counts_every_windows_tokens(server, embedder):
    texts = ["hello", LONG]
    want = embedder.embed_passages(texts, truncate="windows")
    r = server.client.post("/v1/embeddings", json={"input": texts, "truncate": "windows", "input_type": "passage"})
    assert r.status_code == 200, r.text
    assert np.abs(np.array([d["embedding"] for d in r.json()["data"]]) - want).max() <= 1e-6
    windows = embedder.tokenize(["passage: " + LONG], truncate="windows")[0]
    assert len(windows) == 4  # 400 text tokens, 124 a window (128 - [CLS] [SEP] passage :), from 0, 93, 186, 279
    assert r.json()["usage"]["prompt_tokens"] == 5 + sum(len(w) for w in windows)  # "passage: hello": 5 tokens
    tei = server.client.post("/embed", json={"inputs": texts, "truncate": "Windows", "prompt_name": "passage"})
    assert tei.status_code == 200 and np.abs(np.array(tei.json()) - want).max() <= 1e-6
    raw = server.client.post("/embed", json={"inputs": [LONG], "truncate": "windows", "normalize": False}).json()[0]
    run = embedder.run(embedder.prepare([LONG], None, "windows"), normalize=False)[0]
    assert abs(np.linalg.norm(raw) - 1) > 1e-3 and np.abs(np.array(raw) - run).max() <= 1e-6
    cut = server.client.post("/v1/embeddings", json={"input": [LONG], "truncate": True}).json()
    assert cut["usage"]["prompt_tokens"] == 128


@pytest.mark.parametrize("form", FORMS)
def test_compact_encoding_formats_on_both_routes(server, embedder, form):
    texts = ["query: how far is paris", "passage: the city of paris " * 20]
    want = embedder.embed(texts, output=form)
    for route, body in (("/v1/embeddings", {"input": texts}), ("/embed", {"inputs": texts})):
        as_json = server.client.post(route, json={**body, "encoding_format": form})
        assert as_json.status_code == 200, as_json.text
        rows = as_json.json() if route == "/embed" else [d["embedding"] for d in as_json.json()["data"]]
        assert rows == want.tolist()
        as_b64 = server.client.post(route, json={**body, "encoding_format": form + "_base64"}).json()
        strings = as_b64 if route == "/embed" else [d["embedding"] for d in as_b64["data"]]
        got = np.stack([np.frombuffer(base64.b64decode(s), dtype=want.dtype) for s in strings])
        assert np.array_equal(got, want)
        assert len(base64.b64decode(strings[0])) == {"int8": 32, "uint8": 32}.get(form, 4)


def test_float_base64_on_the_tei_route_is_little_endian_float32(server, embedder):
    strings = server.client.post("/embed", json={"inputs": ["paris"], "encoding_format": "base64"}).json()
    assert np.abs(np.frombuffer(base64.b64decode(strings[0]), "<f4") - embedder.embed(["paris"])[0]).max() <= 1e-6


def test_the_openai_client_gets_compact_forms_only_when_it_asks(server, embedder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
    texts = ["query: paris", "passage: paris is in france"]
    ints = client.embeddings.create(model="tiny", input=texts, encoding_format="int8")
    assert [d.embedding for d in ints.data] == embedder.embed(texts, output="int8").tolist()
    packed = client.embeddings.create(model="tiny", input=texts, encoding_format="ubinary_base64")
    assert [base64.b64decode(d.embedding) for d in packed.data] == [
        row.tobytes() for row in embedder.embed(texts, output="ubinary")]
    default = client.embeddings.create(model="tiny", input=texts)  # the client's base64, decoded as float32
    assert np.abs(np.array([d.embedding for d in default.data]) - embedder.embed(texts)).max() <= 1e-6
    windows = client.embeddings.create(model="tiny", input=[LONG], extra_body={"truncate": "windows"})
    assert np.abs(np.array(windows.data[0].embedding) - embedder.embed([LONG], truncate="windows")[0]).max() <= 1e-6


def test_a_model_without_ranges_answers_400_for_int8_and_serves_the_rest(tiny_export):
    old = Embedder.load(tiny_export, variant="fp32", threads=1)
    old.embedding_ranges = None  # as an export made before the ranges were recorded
    running = serve(old)
    try:
        for route, body in (("/v1/embeddings", {"input": "x"}), ("/embed", {"inputs": "x"})):
            for form in ("int8", "uint8_base64"):
                r = running.client.post(route, json={**body, "encoding_format": form})
                error = r.json()["error"]
                assert r.status_code == 400 and error["param"] == "encoding_format", r.text
                assert error["message"].startswith(f"'encoding_format' {form}: int8 and uint8 vectors need the "
                                                   "per-dimension ranges")
                assert "re-export the model" in error["message"]
            ok = running.client.post(route, json={**body, "encoding_format": "binary"})
            assert ok.status_code == 200 and len(ok.json()[0] if route == "/embed" else ok.json()["data"][0]["embedding"]) == 4
        assert running.count(200) == 1 and running.count(400) == 2  # refused before any work, and counted
        _good(running)
    finally:
        running.stop()


def test_queued_windowed_and_plain_requests_share_calls_and_get_their_own_vectors(embedder):
    """Inference is held until 8 requests are admitted, so the 7 queued behind the first are merged into one call
    whose rows mix windows and whole texts; each request gets exactly its own texts' vectors."""
    fake = Fake(embedder)
    running = serve(fake)
    bodies = [{"input": [LONG * (1 + i % 3), "paris"][: 1 + i % 2], "truncate": "windows"} if i % 2 else
              {"input": ["hello world", f"city {i}"], "truncate": True, "encoding_format": "binary"} for i in range(8)]
    try:
        def client(body):
            with httpx.Client(base_url=running.url, timeout=TIMEOUT) as c:
                return c.post("/v1/embeddings", json=body)
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, body) for body in bodies]
            until(lambda: len(running.state.batcher._queue) == 7, "7 requests are queued behind the held one")
            fake.gate.set()
            results = [f.result(TIMEOUT) for f in futures]
    finally:
        fake.gate.set()
        running.stop()
    assert [len(call) for call in fake.calls] == [1, 7]  # the first alone (held), then the 7 queued in one call
    for body, r in zip(bodies, results):
        assert r.status_code == 200, r.text
        got = [d["embedding"] for d in r.json()["data"]]
        if body["truncate"] == "windows":
            want = embedder.embed(body["input"], truncate="windows")
            assert np.abs(np.array(got) - want).max() <= 1e-6
        else:
            assert got == embedder.embed(body["input"], output="binary").tolist()
