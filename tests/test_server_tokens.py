"""Token-level routes and inputs of the server: ``POST /tokenize`` against the Hugging Face fast tokenizer (the real
uncased WordPiece of all-MiniLM-L6-v2 when ../shared has it, else the tiny test tokenizer), and token-id arrays as
input on ``/v1/embeddings`` and ``/embed``: the vector of the text they came from, cut as the text would be, and
merged with text requests by the batcher."""

import base64
import concurrent.futures
import shutil

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the server extra is not installed (pip install 'e5onnx[server]')")
pytest.importorskip("httpx")
transformers = pytest.importorskip("transformers")

from e5onnx.runtime import Embedder  # noqa: E402

from conftest import MINILM, TOKENIZER_FILES, build_bert, build_tiny_tokenizer  # noqa: E402
from serving import TIMEOUT, Fake, serve, until  # noqa: E402

TEXTS = ["how much protein should a female eat", "Héllo wörld, ÇA VA? naïve café au lait", "東京は日本の首都です",
         "unaffable hyperparameterisation 123-456", "emoji 🙂 tabs\tand\nnewlines", "Ünïcödé ß straße Ελληνικά"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-layer, hidden-32 random BERT with 512 positions and MiniLM's tokenizer (vocab 30522) when ../shared
    has it, else the tiny tokenizer."""
    src = tmp_path_factory.mktemp("tokens-bert")
    if (MINILM / "tokenizer.json").is_file():
        for name in TOKENIZER_FILES:
            shutil.copy(MINILM / name, src / name)
        vocab_size = 30522
    else:
        vocab_size = build_tiny_tokenizer(src)
    build_bert(src, seed=3, vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512)
    return src


@pytest.fixture(scope="module")
def embedder(source, tmp_path_factory):
    from e5onnx.export import export_model

    out = tmp_path_factory.mktemp("tokens-onnx") / "m"
    export_model(str(source), out, max_length=512)
    return Embedder.load(out, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def hf(source):
    return transformers.AutoTokenizer.from_pretrained(str(source))


@pytest.fixture(scope="module")
def server(embedder):
    running = serve(embedder)
    yield running
    running.stop()


def _tokenize(server, **body):
    r = server.client.post("/tokenize", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _embedding(server, route, body):
    r = server.client.post(route, json=body)
    assert r.status_code == 200, r.text
    if route == "/embed":
        return np.array(r.json(), dtype=np.float32)
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r.json()["data"]])


def test_tokenize_equals_the_hf_fast_tokenizer(server, hf):
    texts = TEXTS + ["paris " * 600]  # 602 tokens: over the max length, nothing is cut
    for units in ("bytes", "chars"):
        for add in (True, False):
            got = _tokenize(server, inputs=texts, add_special_tokens=add, offset_units=units)
            for text, tokens in zip(texts, got):
                want = hf(text, add_special_tokens=add, return_offsets_mapping=True, return_special_tokens_mask=True)
                assert [t["id"] for t in tokens] == want["input_ids"]
                assert [t["special"] for t in tokens] == [bool(m) for m in want["special_tokens_mask"]]
                raw = text.encode("utf-8")
                for t, (start, stop) in zip(tokens, want["offset_mapping"]):
                    assert list(t) == ["id", "text", "special", "start", "stop"]  # TEI's SimpleToken, in order
                    if t["special"]:
                        assert t["start"] is None and t["stop"] is None and t["text"] == hf.convert_ids_to_tokens(t["id"])
                    elif units == "chars":
                        assert (t["start"], t["stop"]) == (start, stop) and t["text"] == text[start:stop]
                    else:  # UTF-8 byte offsets, as text-embeddings-inference reports them
                        assert (t["start"], t["stop"]) == (len(text[:start].encode()), len(text[:stop].encode()))
                        assert raw[t["start"]:t["stop"]].decode() == t["text"] == text[start:stop]
    assert len(got[-1]) == 600  # without special tokens: all 600, over max length 512


def test_tokenize_with_a_prompt_name_counts_the_prefix(server, hf, embedder):
    tokens = _tokenize(server, inputs="Héllo wörld", prompt_name="query")[0]
    assert [t["id"] for t in tokens] == hf("query: Héllo wörld")["input_ids"]
    prefixed = "query: Héllo wörld".encode()
    assert [prefixed[t["start"]:t["stop"]].decode() for t in tokens if not t["special"]][:2] == ["query", ":"]
    assert len(tokens) == len(embedder.prepare(["Héllo wörld"], "query").input_ids[0])  # what usage counts
    again = _tokenize(server, inputs="QUERY: Héllo wörld", prompt_name="query")[0]  # the prefix is added once
    assert [t["id"] for t in again] == [t["id"] for t in tokens]


def test_token_ids_give_the_vector_of_their_text(server, embedder):
    ids = [[t["id"] for t in tokens] for tokens in _tokenize(server, inputs=TEXTS[:4])]
    want = _embedding(server, "/v1/embeddings", {"input": TEXTS[:4], "encoding_format": "base64"})
    assert np.abs(want - embedder.embed(TEXTS[:4])).max() <= 1e-6
    got = _embedding(server, "/v1/embeddings", {"input": ids, "encoding_format": "base64"})
    assert np.abs(got - want).max() <= 1e-6
    one = _embedding(server, "/v1/embeddings", {"input": ids[1], "encoding_format": "base64"})  # a flat array
    assert np.abs(one[0] - want[1]).max() <= 1e-6
    tei = _embedding(server, "/embed", {"inputs": ids, "normalize": False})
    assert np.abs(tei - _embedding(server, "/embed", {"inputs": TEXTS[:4], "normalize": False})).max() <= 1e-6
    assert np.abs(np.linalg.norm(tei, axis=1) - 1).min() > 1e-3  # not normalised
    queries = [[t["id"] for t in tokens] for tokens in _tokenize(server, inputs=TEXTS[:2], prompt_name="query")]
    got = _embedding(server, "/v1/embeddings", {"input": queries, "encoding_format": "base64"})
    assert np.abs(got - embedder.embed_queries(TEXTS[:2])).max() <= 1e-6
    r = server.client.post("/v1/embeddings", json={"input": ids})
    assert r.json()["usage"]["prompt_tokens"] == sum(len(row) for row in ids)
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
    out = client.embeddings.create(model="m", input=ids)  # the unmodified client, token-id arrays as input
    assert np.abs(np.array([d.embedding for d in out.data]) - want).max() <= 1e-6
    assert out.usage.prompt_tokens == sum(len(row) for row in ids)


def test_truncate_cuts_token_ids_as_it_cuts_the_text(server, embedder):
    text = "the city of paris " * 150  # 600 word pieces
    ids = [t["id"] for t in _tokenize(server, inputs=text)[0]]
    assert len(ids) == 602
    r = server.client.post("/v1/embeddings", json={"input": [ids], "truncate": True, "encoding_format": "base64"})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 512
    want = _embedding(server, "/v1/embeddings", {"input": text, "truncate": True, "encoding_format": "base64"})
    got = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), "<f4")
    assert np.abs(got - want[0]).max() <= 1e-6
    refused = server.client.post("/embed", json={"inputs": [ids[:10], ids]})
    assert refused.status_code == 400 and refused.json()["error"]["message"] == (
        "inputs[1]: 602 tokens, over max_length 512, and truncation is off; send truncate: true to cut it")


def test_tokenize_limits(embedder):
    running = serve(embedder, max_client_batch_size=2, max_body_bytes=1 << 20)
    try:
        r = running.client.post("/tokenize", json={"inputs": ["ok", "a" * (512 * 250 + 1)]})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(
            "inputs[1] has 128001 characters, over the limit of 128000 for /tokenize")
        r = running.client.post("/tokenize", json={"inputs": ["paris " * 600, "paris " * 500]})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(
            "the inputs hold 1104 tokens in all, over the limit of 1024 per /tokenize request")
        assert running.client.post("/tokenize", json={"inputs": ["paris " * 600] * 1}).status_code == 200
    finally:
        running.stop()


def test_token_ids_are_merged_with_text_by_the_batcher(embedder):
    fake = Fake(embedder)
    running = serve(fake)
    ids = embedder.tokenize(TEXTS[:3])
    try:
        fake.shut()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(running.client.post, "/v1/embeddings", json={"input": "hello"})
            assert fake.entered.wait(TIMEOUT)  # the first request holds the inference thread
            by_ids = pool.submit(running.client.post, "/v1/embeddings", json={"input": ids})
            until(lambda: running.state.pending == 2, "the token-id request is queued")
            by_text = pool.submit(running.client.post, "/v1/embeddings", json={"input": TEXTS[3:5]})
            until(lambda: running.state.pending == 3, "the text request is queued")
            fake.gate.set()
            results = [f.result(TIMEOUT) for f in (first, by_ids, by_text)]
    finally:
        fake.gate.set()
        running.stop()
    assert fake.calls[1] == [3, 2]  # one inference call: the 3 token-id rows and the 2 texts
    got = np.array([d["embedding"] for d in results[1].json()["data"]])
    assert np.abs(got - embedder.embed(TEXTS[:3])).max() <= 1e-6
