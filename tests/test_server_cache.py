"""The opt-in result cache (``--cache-entries``): a hit returns the very bytes of the miss; changing any part of
the key (prefix, truncation and windows, normalisation, text or token ids, the model's variant, max length or
files, a request field added later) misses; another encoding_format of a cached text is a hit in that form; LRU eviction within N entries; a request mixing hits and misses
runs only its misses; 24 concurrent clients over a churning cache get their own vectors; off by default."""

import base64
import concurrent.futures
import dataclasses
import random
import re
import types

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the server extra is not installed (pip install 'e5onnx[server]')")
httpx = pytest.importorskip("httpx")

from e5onnx.errors import InvalidInputError  # noqa: E402
from e5onnx.runtime import Embedder  # noqa: E402
from e5onnx.runtime.manifest import FileRecord, vectors_identity  # noqa: E402
from e5onnx.server.cache import ResultCache  # noqa: E402
from e5onnx.server.requests import EmbedRequest  # noqa: E402
from e5onnx.server.settings import settings_from  # noqa: E402

from conftest import TINY_WORDS  # noqa: E402
from serving import TIMEOUT, Fake, serve  # noqa: E402


@pytest.fixture(scope="module")
def embedder(tiny512_export):
    return Embedder.load(tiny512_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def cached(embedder):
    """A server with a cache of 64 entries whose inference calls are recorded (:class:`serving.Fake`)."""
    running = serve(Fake(embedder), cache_entries=64)
    yield running
    running.stop()


def _sample(running, name):
    return running.state.metrics.registry.get_sample_value(name) or 0


def _counts(running):
    """``(hits, misses)`` so far."""
    return _sample(running, "e5onnx_cache_hits_total"), _sample(running, "e5onnx_cache_misses_total")


def _post(running, route, body):
    r = running.client.post(route, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _vectors(answer):
    """The vectors of a /v1/embeddings (base64 or float) or /embed answer, float32."""
    if isinstance(answer, list):
        return np.array(answer, dtype=np.float32)
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") if isinstance(d["embedding"], str)
                     else np.array(d["embedding"], dtype=np.float32) for d in answer["data"]])


def test_a_hit_returns_the_identical_bytes_without_inference(cached, embedder):
    body = {"input": ["summit define", "the capital of france"], "encoding_format": "base64"}
    calls, (hits, misses) = len(cached.embedder.calls), _counts(cached)
    first = _post(cached, "/v1/embeddings", body)
    assert len(cached.embedder.calls) == calls + 1 and _counts(cached) == (hits, misses + 2)
    second = _post(cached, "/v1/embeddings", body)
    assert len(cached.embedder.calls) == calls + 1 and _counts(cached) == (hits + 2, misses + 2)  # no inference
    assert second == first  # the same base64 strings: the same bytes, and the same usage
    assert np.abs(_vectors(first) - embedder.embed(body["input"])).max() <= 1e-6
    info = cached.client.get("/info").json()["cache"]
    assert info["max_entries"] == 64 and info["entries"] >= 2 and info["max_vector_bytes"] == 64 * embedder.dim * 4


def test_each_part_of_the_key_misses(cached, embedder):
    """Every setting that changes the vector or its encoding is a new key: a miss, and the vector of that
    setting (not the cached one)."""
    text = "how much protein should a female eat"
    long = "paris " * 600
    ids = embedder.tokenize([text])[0]
    cases = [  # (route, body, the vectors it must return)
        ("/v1/embeddings", {"input": text}, embedder.embed([text])),
        ("/v1/embeddings", {"input": text, "input_type": "query"}, embedder.embed_queries([text])),
        ("/v1/embeddings", {"input": text, "input_type": "passage"}, embedder.embed_passages([text])),
        ("/v1/embeddings", {"input": text + "!"}, embedder.embed([text + "!"])),
        ("/v1/embeddings", {"input": ids}, embedder.embed([text])),
        ("/embed", {"inputs": text, "normalize": False}, embedder.run(embedder.prepare([text]), normalize=False)),
        ("/embed", {"inputs": ids, "normalize": False}, embedder.run(embedder.prepare([text]), normalize=False)),
        ("/v1/embeddings", {"input": [long[:600]], "truncate": True}, embedder.embed([long[:600]])),
        ("/v1/embeddings", {"input": [long[:600]], "truncate": False}, embedder.embed([long[:600]])),
        ("/v1/embeddings", {"input": [long], "truncate": "windows"}, embedder.embed([long], truncate="windows")),
    ]
    for route, body, want in cases:
        hits, misses = _counts(cached)
        got = _vectors(_post(cached, route, body))
        assert _counts(cached) == (hits, misses + 1), (route, body)
        assert np.abs(got - want).max() <= 1e-5, (route, body)
    for route, body, want in cases:  # now every one is a hit, with its own vector
        hits, misses = _counts(cached)
        got = _vectors(_post(cached, route, body))
        assert _counts(cached) == (hits + 1, misses), (route, body)
        assert np.abs(got - want).max() <= 1e-5, (route, body)


def test_another_encoding_format_is_a_hit_in_that_form(cached, embedder):
    """The cache holds float32 vectors; each encoding_format is derived from the cached one after the lookup:
    the same bytes the runtime gives for that form, with no inference."""
    texts = ["encoding city one", "encoding city two"]
    _post(cached, "/v1/embeddings", {"input": texts})
    calls, (hits, misses) = len(cached.embedder.calls), _counts(cached)
    for form in ("base64", "int8", "uint8", "binary", "ubinary_base64"):
        answer = _post(cached, "/v1/embeddings", {"input": texts, "encoding_format": form})
        name = form.removesuffix("_base64")
        if name == "base64":
            got = _vectors(answer)
            assert np.abs(got - embedder.embed(texts)).max() <= 1e-6
            continue
        want = embedder.embed(texts, output=name)
        if form.endswith("_base64"):
            got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), want.dtype) for d in answer["data"]])
        else:
            got = np.array([d["embedding"] for d in answer["data"]], dtype=want.dtype)
        assert np.array_equal(got, want), form
    tei = _post(cached, "/embed", {"inputs": texts, "encoding_format": "int8"})
    assert np.array_equal(np.array(tei, dtype=np.int8), embedder.embed(texts, output="int8"))
    assert len(cached.embedder.calls) == calls and _counts(cached) == (hits + 12, misses)


def test_the_model_is_part_of_the_key(tiny512_export, embedder):
    int8 = Embedder.load(tiny512_export, variant="int8", threads=1)
    shorter = Embedder.load(tiny512_export, variant="fp32", threads=1, max_length=256)
    other_file = types.SimpleNamespace(**{k: getattr(embedder, k) for k in (
        "variant", "max_length", "dim", "query_prefix", "passage_prefix", "model_path", "tokenizer_path")})
    files = dict(embedder.manifest.files)
    files[embedder.model_path.name] = FileRecord("0" * 64, 1)  # the same name and settings, other ONNX bytes
    other_file.manifest = types.SimpleNamespace(files=files)
    req = EmbedRequest(texts=["paris"])
    fp32_cache = ResultCache(4, embedder.dim, embedder.identity())
    found = fp32_cache.lookup(req)
    fp32_cache.store(found, embedder.embed(["paris"]), [3])
    assert fp32_cache.lookup(req).misses == []
    for other in (int8, shorter, other_file):
        assert vectors_identity(other) != embedder.identity()  # the fake file: the runtime's function itself
        assert fp32_cache.keys(req) != ResultCache(4, embedder.dim, vectors_identity(other)).keys(req)
    assert Embedder.load(tiny512_export, variant="fp32", threads=1).identity() == embedder.identity()


def test_a_request_field_added_later_is_part_of_the_key(embedder):
    """A new setting (say, a pooling choice) splits the cache with no change to the cache code."""
    Later = dataclasses.make_dataclass("Later", [("pooling", str, "mean")], bases=(EmbedRequest,))  # noqa: N806
    cache = ResultCache(4, embedder.dim, embedder.identity())
    keys = {p: cache.keys(Later(texts=["paris"], pooling=p)) for p in ("mean", "cls", "max")}
    assert len({k[0] for k in keys.values()}) == 3
    assert cache.keys(Later(texts=["paris"], model="a")) == cache.keys(Later(texts=["paris"], model="b"))
    assert cache.keys(Later(texts=["paris"], encoding_format="float")) == \
        cache.keys(Later(texts=["paris"], encoding_format="binary"))  # the form is applied after the lookup


def test_a_mixed_request_runs_only_its_misses(cached, embedder):
    _post(cached, "/v1/embeddings", {"input": ["alpha city", "beta city"]})
    calls = len(cached.embedder.calls)
    texts = ["alpha city", "gamma city", "beta city", "gamma city", "delta city"]
    answer = _post(cached, "/v1/embeddings", {"input": texts})
    assert cached.embedder.calls[calls:] == [[2]]  # one call of the 2 distinct misses (gamma once, delta)
    assert np.abs(_vectors(answer) - embedder.embed(texts)).max() <= 1e-6
    assert answer["usage"]["prompt_tokens"] == sum(len(r) for r in embedder.tokenize(texts))
    r = cached.client.post("/v1/embeddings", json={"input": ["alpha city", "beta city", "paris " * 600]})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("input[2]: 602 tokens")  # its own index
    r = cached.client.post("/v1/embeddings", json={"input": ["alpha city", "epsilon", "\u200b"]})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("input[2] has no tokens")


def test_lru_eviction_within_n_entries(embedder):
    running = serve(embedder, cache_entries=2)
    try:
        for text in ("one city", "two city", "one city", "three city"):  # "two" is the least recently used
            _post(running, "/v1/embeddings", {"input": text})
        assert _sample(running, "e5onnx_cache_evictions_total") == 1
        assert _sample(running, "e5onnx_cache_entries") == 2 and len(running.state.cache) == 2
        hits, misses = _counts(running)
        _post(running, "/v1/embeddings", {"input": ["one city", "three city"]})
        assert _counts(running) == (hits + 2, misses)
        _post(running, "/v1/embeddings", {"input": "two city"})
        assert _counts(running) == (hits + 2, misses + 1)
        assert running.state.cache._vectors.nbytes == 2 * embedder.dim * 4  # the bound: N x dim x 4 bytes
        text = running.client.get("/metrics").text
        assert re.search(r"^e5onnx_cache_hits_total 3\.0$", text, re.M)  # 1 + 2
    finally:
        running.stop()


def test_concurrent_clients_over_a_churning_cache_get_their_own_vectors(embedder):
    """24 clients send 48 requests of 1-8 texts from a pool of 40, through a cache of 16 entries (constant
    eviction, hits and misses interleaved with inference calls); every vector equals the offline one."""
    pool_texts = [" ".join(random.Random(i).choice(TINY_WORDS) for _ in range(1 + i % 30)) for i in range(40)]
    rng = random.Random(5)
    bodies = [rng.sample(pool_texts, rng.randint(1, 8)) for _ in range(48)]
    want = dict(zip(pool_texts, embedder.embed(pool_texts)))
    running = serve(embedder, cache_entries=16)
    try:
        def client(body):
            with httpx.Client(base_url=running.url, timeout=TIMEOUT) as c:
                return c.post("/v1/embeddings", json={"input": body, "encoding_format": "base64"})
        with concurrent.futures.ThreadPoolExecutor(24) as workers:
            results = list(workers.map(client, bodies))
        hits, misses = _counts(running)
    finally:
        running.stop()
    for body, r in zip(bodies, results):
        assert r.status_code == 200, r.text
        assert np.abs(_vectors(r.json()) - np.stack([want[t] for t in body])).max() <= 1e-6
    assert hits + misses == sum(len(b) for b in bodies) and hits > 0 and misses >= 40


def test_off_by_default_and_settings(embedder):
    running = serve(embedder)
    try:
        _post(running, "/v1/embeddings", {"input": ["paris", "paris"]})
        assert running.state.cache is None and _counts(running) == (0, 0)
        assert running.client.get("/info").json()["cache"] == {"max_entries": 0, "entries": 0, "max_vector_bytes": 0}
    finally:
        running.stop()
    assert settings_from({"model": "m"}, {"E5ONNX_CACHE_ENTRIES": "1000"}).cache_entries == 1000
    assert settings_from({"model": "m", "cache_entries": 5}, {"E5ONNX_CACHE_ENTRIES": "1000"}).cache_entries == 5
    with pytest.raises(InvalidInputError, match="cache_entries must be a whole number >= 0"):
        settings_from({"model": "m"}, {"E5ONNX_CACHE_ENTRIES": "-1"})
    with pytest.raises(InvalidInputError, match=r"--cache-entries 10000000000000: 14305114.7 GiB of vectors cannot"):
        ResultCache(10**13, 384, b"model")  # a clear error at start-up, not a MemoryError traceback


def test_the_cache_entries_flag_reaches_the_server(monkeypatch):
    import e5onnx.server.main
    from e5onnx.cli import main

    served = []
    monkeypatch.setattr(e5onnx.server.main, "serve", lambda settings: served.append(settings) or 0)
    monkeypatch.setenv("E5ONNX_CACHE_ENTRIES", "9")
    assert main(["serve", "DIR", "--cache-entries", "7"]) == 0 and main(["serve", "DIR"]) == 0
    assert [s.cache_entries for s in served] == [7, 9]
