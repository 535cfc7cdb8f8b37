"""``truncate="windows"``: long texts as overlapping windows, against references computed here — the Hugging Face
tokenizer and the PyTorch model on each window, and NumPy from per-window ``embed_token_ids`` calls — plus the
fitting-text identity, the request-level API and bad input."""

import json
import random

import numpy as np
import pytest

from e5onnx import Embedder, InvalidInputError
from e5onnx.config import WINDOW_OVERLAP
from e5onnx.errors import TextError
from e5onnx.runtime import prepared as prepared_module
from e5onnx.runtime.windows import combine, window_starts

from conftest import MINILM, TINY_WORDS, requires_shared

MAX = 128  # the tiny export's max length


def _text(words, seed=0):
    rng = random.Random(seed)
    return " ".join(rng.choice(TINY_WORDS[4:]) for _ in range(words))  # skip the/a/an/of: any word, one token


LONG = _text(1500)  # ~1,500 word pieces: about 16 windows of 128 tokens


@pytest.fixture(scope="module")
def embedder(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def hf(tiny_bert_dir):
    """The source model's Hugging Face fast tokenizer and PyTorch model (the reference)."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert_dir)), AutoModel.from_pretrained(str(tiny_bert_dir)).eval()


def test_window_starts_by_hand():
    assert WINDOW_OVERLAP == 0.25  # the figures below are for the documented default
    # 508 text tokens per window (512 - [CLS] [SEP] - "passage" ":"): overlap 127, stride 381
    assert window_starts(508, 508) == [0]
    assert window_starts(509, 508) == [0, 381]
    assert window_starts(2000, 508) == [0, 381, 762, 1143, 1524]  # 1524 + 508 >= 2000: the last one
    assert window_starts(300, 124) == [0, 93, 186]  # tiny export: 128 - 2 - 2; overlap 31
    assert window_starts(10, 1) == list(range(10))  # stride at least 1


def _reference_windows(tokenizer, text, prefix, max_length):
    """The windows of ``text`` as the module docstring describes them, built from the Hugging Face tokenizer."""
    body = tokenizer(prefix + text, add_special_tokens=False)["input_ids"]
    head = tokenizer(prefix.strip(), add_special_tokens=False)["input_ids"] if prefix else []
    assert body[:len(head)] == head
    body = body[len(head):]
    capacity = max_length - 2 - len(head)
    stride = capacity - int(capacity * WINDOW_OVERLAP)
    windows, start = [], 0
    while True:
        windows.append([tokenizer.cls_token_id, *head, *body[start:start + capacity], tokenizer.sep_token_id])
        if start + capacity >= len(body):
            return windows
        start += stride


def _torch_vector(model, windows):
    """Token-weighted mean of each window's masked mean pool (PyTorch, float64 sums), L2-normalised."""
    import torch

    total, count = np.zeros(model.config.hidden_size), 0
    with torch.no_grad():
        for w in windows:
            hidden = model(input_ids=torch.tensor([w]), attention_mask=torch.ones(1, len(w), dtype=torch.long))
            total += hidden.last_hidden_state[0].double().sum(0).numpy()  # = len(w) x the window's mean
            count += len(w)
    v = total / count
    return v / np.linalg.norm(v)


def test_a_long_passage_matches_pytorch_on_the_huggingface_windows(embedder, hf):
    tokenizer, model = hf
    want_rows = _reference_windows(tokenizer, LONG, "passage: ", MAX)
    assert len(want_rows) >= 15 and all(len(r) <= MAX for r in want_rows)
    assert all(r[1:3] == tokenizer("passage:", add_special_tokens=False)["input_ids"] for r in want_rows)
    prepared = embedder.prepare([LONG], "passage", "windows")
    assert prepared.input_ids == want_rows and prepared.windows == (len(want_rows),)
    assert prepared.token_counts.tolist() == [sum(len(r) for r in want_rows)] == [prepared.tokens]
    got = embedder.embed_passages([LONG], truncate="windows")
    want = _torch_vector(model, want_rows)
    assert np.abs(got[0] - want).max() <= 1e-5  # fp32 ONNX vs PyTorch, as the export's parity gate
    truncated = embedder.embed_passages([LONG])[0]
    assert float(truncated @ want) < 0.999  # windows really see the whole text


def test_windows_of_the_int8_variant_match_numpy_from_each_window(tiny_export, hf):
    tokenizer, _ = hf
    int8 = Embedder.load(tiny_export, variant="int8", threads=1)
    texts = [LONG, "hello world", _text(400, seed=1)]
    rows = [_reference_windows(tokenizer, t, "", MAX) for t in texts]
    got = int8.embed(texts, truncate="windows")
    for vector, windows in zip(got, rows):
        pooled = int8.embed_token_ids(windows, normalize=False).astype(np.float64)
        lengths = np.array([len(w) for w in windows], dtype=np.float64)
        mean = (pooled * lengths[:, None]).sum(0) / lengths.sum()
        assert np.abs(vector - mean / np.linalg.norm(mean)).max() <= 1e-6


def test_texts_that_fit_are_bit_identical_to_truncation(embedder):
    fits = [_text(124, seed=2), "hello world", "", "東京", "query: paris"]  # with "query:", the first is 128 tokens
    assert len(embedder.tokenize("query: " + fits[0])[0]) == MAX
    windowed = embedder.prepare(fits, "query", "windows")
    assert windowed.windows is None and windowed.input_ids == embedder.prepare(fits, "query").input_ids
    np.testing.assert_array_equal(embedder.embed_queries(fits, truncate="windows"), embedder.embed_queries(fits))
    np.testing.assert_array_equal(embedder.run(windowed), embedder.run(embedder.prepare(fits, "query")))
    one_over = _text(127, seed=2)  # 129 tokens: two windows
    assert [len(r) for r in embedder.tokenize(one_over, truncate="windows")[0]] == [MAX, 2 + 127 - 95]  # stride 126 - 31


def test_a_text_with_its_own_prefix_windows_as_embed_passages_does(embedder):
    rows = embedder.tokenize(["passage: " + LONG], truncate="windows")[0]
    assert rows == embedder.prepare([LONG], "passage", "windows").input_ids
    np.testing.assert_array_equal(embedder.embed(["Passage: " + LONG], truncate="windows"),
                                  embedder.embed_passages([LONG], truncate="windows"))
    prefix = rows[0][1:3]  # "passage" ":"
    assert all(r[1:3] == prefix for r in rows)
    plain = embedder.tokenize([LONG], truncate="windows")[0]  # no prefix: none repeated
    assert all(r[1:3] != prefix for r in plain) and len(plain[0]) == MAX


def test_requests_of_windows_and_rows_share_forward_passes(embedder):
    a = embedder.prepare([LONG, "paris"], "passage", "windows")
    b = embedder.prepare(["hello", _text(300, seed=3)], None, "windows")
    c = embedder.prepare(["city"])
    assert len(a) == 2 and len(a.input_ids) > 2 and a.token_counts[1] == len(a.input_ids[-1])
    va, vb, vc = embedder.run([a, b, c], normalize=[True, False, True], batch_size=64)
    assert va.shape == (2, 32) and vb.shape == (2, 32) and vc.shape == (1, 32)
    np.testing.assert_allclose(va, embedder.run(a), atol=1e-6, rtol=0)
    np.testing.assert_allclose(vc, embedder.run(c), atol=1e-6, rtol=0)
    raw = embedder.embed_token_ids(b.input_ids, normalize=False).astype(np.float64)
    lengths = b.row_counts.astype(np.float64)
    split = b.windows[0]
    for got, part, weights in ((vb[0], raw[:split], lengths[:split]), (vb[1], raw[split:], lengths[split:])):
        np.testing.assert_allclose(got, (part * weights[:, None]).sum(0) / weights.sum(), atol=1e-6, rtol=0)


def test_combine_keeps_single_rows_bit_for_bit():
    pooled = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    out = combine(pooled, [7, 3, 1, 10, 4], [1, 3, 1])
    assert out.dtype == np.float32 and out.shape == (3, 4)
    assert out[0].tobytes() == pooled[0].tobytes() and out[2].tobytes() == pooled[4].tobytes()
    want = (3 * pooled[1].astype(np.float64) + pooled[2] + 10 * pooled[3]) / 14
    np.testing.assert_allclose(out[1], want, rtol=1e-6)


def test_bad_truncate_values_name_what_is_allowed(embedder):
    for value in ("window", "Windows", 1, None, "true"):
        with pytest.raises(InvalidInputError, match=r"truncate must be True, False or 'windows', got "):
            embedder.embed(["x"], truncate=value)
        with pytest.raises(InvalidInputError, match=r"truncate must be True, False or 'windows'"):
            embedder.prepare(["x"], truncate=value)


def test_a_text_over_the_window_limit_is_refused_by_index(embedder, monkeypatch):
    monkeypatch.setattr(prepared_module, "WINDOW_MAX_TOKENS", 300)
    texts = ["fine", _text(299, seed=4), _text(298, seed=5)]
    p = embedder.prepare(texts, None, "windows")
    assert [str(e) for e in p.errors] == ["texts[1]: 301 tokens, over the 300 a text may have with "
                                          "truncate='windows' (WINDOW_MAX_TOKENS); split the text"]
    with pytest.raises(TextError, match=r"^texts\[1\]: 301 tokens, over the 300") as info:
        embedder.embed(texts, truncate="windows")
    assert info.value.index == 1
    assert embedder.embed(texts[::2], truncate="windows").shape == (2, 32)


def test_a_max_length_with_no_room_beside_the_prefix_is_refused(tiny_export):
    small = Embedder.load(tiny_export, variant="fp32", threads=1, max_length=4)
    with pytest.raises(TextError, match=r"^texts\[0\]: 5 tokens, over max_length 4, which leaves no room for text"):
        small.embed_passages(["paris"], truncate="windows")  # [CLS] passage : paris [SEP]
    rows = small.tokenize(["paris city hello"], truncate="windows")[0]  # no prefix: 2 text tokens a window, stride 2
    assert [len(r) for r in rows] == [4, 3] and small.embed(["paris city hello"], truncate="windows").shape == (1, 32)


def test_cli_windows_flag(capsys, tiny_export, embedder):
    from e5onnx.cli import main

    assert main(["embed", str(tiny_export), "--variant", "fp32", "--windows", "--passage", LONG, "paris"]) == 0
    rows = [json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(rows, embedder.embed_passages([LONG, "paris"], truncate="windows"), atol=1e-6, rtol=0)
    with pytest.raises(SystemExit) as info:
        main(["embed", str(tiny_export), "--windows", "--no-truncate", "x"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@requires_shared
def test_windows_of_the_e5_wordpiece_tokenizer_match_huggingface():
    """e5-small's tokenizer family (MiniLM's uncased WordPiece, vocab 30522) at max length 512, mixed scripts."""
    from transformers import AutoTokenizer

    from e5onnx.runtime.prepared import prepare_texts
    from e5onnx.runtime.tokenizer import TextTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(MINILM))
    ours = TextTokenizer(MINILM / "tokenizer.json", 512)
    assert ours.framing_ids == ([hf_tok.cls_token_id], [hf_tok.sep_token_id])
    text = " ".join(["Café crème brûlée in Paris — 東京タワー, naïve façades; unbelievably tokenizing!"] * 120)
    prefixes = {"query": "query: ", "passage": "passage: "}
    for kind in ("passage", "query"):
        got = prepare_texts(ours, [text, "short"], kind, "windows", prefixes)
        want = _reference_windows(hf_tok, text, prefixes[kind], 512)
        assert len(want) >= 5 and got.input_ids[:-1] == want and got.windows == (len(want), 1)
        assert got.input_ids[-1] == hf_tok(prefixes[kind] + "short")["input_ids"]
