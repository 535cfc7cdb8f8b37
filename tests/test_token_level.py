"""The Embedder's token-level API (:mod:`e5onnx.runtime.tokens`): ``tokens`` against the Hugging Face fast
tokenizer (ids, character offsets, special-tokens mask, untruncated), and ``prepare_ids``: token ids checked,
cut as the tokenizer cuts texts, and embedded to the vector of the text they came from."""

import numpy as np
import pytest

from e5onnx.errors import InvalidInputError, TextError
from e5onnx.runtime import Embedder

TEXTS = ["query: how much protein should a female eat", "Héllo wörld, ÇA VA? naïve café", "東京 is big",
         "unaffable hyperparameterisation 123-456", "emoji 🙂 and tabs\tand\nnewlines", "  leading spaces"]


@pytest.fixture(scope="module")
def tiny(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_bert_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tiny_bert_dir))


def test_tokens_equal_the_hf_fast_tokenizer(tiny, hf_tokenizer):
    long = "paris " * 200  # 202 tokens with [CLS] and [SEP]: over max length 128, nothing is cut
    for add in (True, False):
        for text, got in zip(TEXTS + [long], tiny.tokens(TEXTS + [long], add_special_tokens=add)):
            want = hf_tokenizer(text, add_special_tokens=add, return_offsets_mapping=True,
                                return_special_tokens_mask=True)
            assert got.text == text and got.ids == want["input_ids"]
            assert [t.special for t in got.tokens] == [bool(m) for m in want["special_tokens_mask"]]
            for token, (start, stop) in zip(got.tokens, want["offset_mapping"]):
                if token.special:
                    assert (token.start, token.stop) == (None, None) and token.text in hf_tokenizer.all_special_tokens
                else:
                    assert (token.start, token.stop) == (start, stop) and token.text == text[start:stop]
            want_bytes = [(None, None) if special else (len(text[:a].encode()), len(text[:b].encode()))
                          for (a, b), special in zip(want["offset_mapping"], want["special_tokens_mask"])]
            assert got.byte_offsets() == want_bytes
    assert len(tiny.tokens(long)[0].tokens) == 202 and tiny.tokenize(long)[0] == tiny.tokens(long)[0].ids[:127] + [tiny.tokens(long)[0].ids[-1]]


def test_tokens_with_a_prefix_and_byte_offsets(tiny, hf_tokenizer):
    got = tiny.tokens(["Héllo 東京", "query: already"], kind="query")
    assert [g.text for g in got] == ["query: Héllo 東京", "query: already"]  # the prefix is added once
    assert got[0].ids == hf_tokenizer("query: Héllo 東京")["input_ids"]
    assert [t.text for t in got[0].tokens] == ["[CLS]", "query", ":", "Héllo", "東", "京", "[SEP]"]
    raw = got[0].text.encode("utf-8")
    offsets = got[0].byte_offsets()
    assert offsets == [(None, None), (0, 5), (5, 6), (7, 13), (14, 17), (17, 20), (None, None)]
    assert [raw[a:b].decode() for a, b in offsets[1:-1]] == ["query", ":", "Héllo", "東", "京"]
    with pytest.raises(TextError, match=r"texts\[1\]: expected str, got int"):
        tiny.tokens(["a", 3])
    with pytest.raises(InvalidInputError, match="kind must be"):
        tiny.tokens("a", kind="document")


def test_prepare_ids_cut_like_the_tokenizer_and_embed_like_the_text(tiny):
    texts = ["paris " * n for n in (1, 125, 126, 127, 300)]  # 3, 127, 128, 129, 302 tokens; max length 128
    full = [t.ids for t in tiny.tokens(texts)]
    cut = tiny.prepare_ids(full, truncate=True)
    assert cut.errors == () and cut.input_ids == tiny.tokenize(texts)  # the ids of each text truncated
    assert np.array_equal(tiny.run(cut), tiny.embed(texts))
    no_sep = full[-1][:-1]  # no special token at the end: the first 128 ids are kept
    assert tiny.prepare_ids([no_sep]).input_ids == [no_sep[:128]]
    refused = tiny.prepare_ids(full, truncate=False)
    assert [e.index for e in refused.errors] == [3, 4] and refused.input_ids[3] == []
    assert str(refused.errors[0]) == "rows[3]: 129 tokens, over max_length 128, and truncation is off"
    as_array = tiny.prepare_ids([np.array(full[0])]).input_ids  # NumPy rows are accepted too
    assert as_array == [full[0]] and type(as_array[0][0]) is int
    with pytest.raises(InvalidInputError, match="rows must be a list of token-id lists, got str"):
        tiny.prepare_ids("101 102")
