"""API behaviour on bad or awkward input: exact error types, messages that name the index and the reason,
and exact values for the edge cases that are accepted (empty input, empty texts, over-long texts, prefixes).

Runs on the tiny random BERT export (``tiny_export``), so it needs nothing from ../shared.
"""

import warnings

import numpy as np
import pytest

from e5onnx.errors import E5OnnxError, InvalidInputError
from e5onnx.runtime.embedder import Embedder
from e5onnx.runtime.texts import add_prefix, as_text_list, has_prefix

#: Ids of [CLS] and [SEP] in the tiny tokenizer's vocabulary ([PAD], [UNK], [CLS], [SEP], [MASK], ...).
CLS, SEP = 2, 3
#: Words that are whole tokens of the tiny tokenizer's vocabulary (see tests/conftest.py TINY_WORDS).
ONE_TOKEN_WORDS = ("hello", "world", "paris", "city", "capital", "france", "robots", "protein")


@pytest.fixture(scope="module")
def embedder(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


def long_words(n):
    """``n`` words, each a single token of the tiny vocabulary."""
    return [ONE_TOKEN_WORDS[i % len(ONE_TOKEN_WORDS)] for i in range(n)]


def assert_unit_rows(vectors):
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    assert np.all(np.abs(norms - 1.0) < 1e-5), norms


# --------------------------------------------------------------------------------------------------- shapes


def test_empty_list_gives_zero_rows(embedder):
    out = embedder.embed([])
    assert out.shape == (0, embedder.dim)
    assert out.dtype == np.float32


def test_empty_list_queries_and_passages(embedder):
    assert embedder.embed_queries([]).shape == (0, embedder.dim)
    assert embedder.embed_passages([]).shape == (0, embedder.dim)
    assert embedder.tokenize([]) == []


def test_single_str_is_one_text(embedder):
    one = embedder.embed("hello world")
    listed = embedder.embed(["hello world"])
    assert one.shape == (1, embedder.dim)
    assert one.dtype == np.float32
    np.testing.assert_allclose(one, listed, atol=1e-6, rtol=0)
    assert embedder.tokenize("hello world") == embedder.tokenize(["hello world"])
    assert len(embedder.tokenize("hello world")) == 1  # not split into characters


def test_dim_and_max_length_are_the_exported_ones(embedder):
    assert (embedder.dim, embedder.max_length) == (32, 128)  # the tiny BERT's hidden size, exported at 128
    assert embedder.embed(["hello"]).shape == (1, 32)


# --------------------------------------------------------------------------------------------- bad items


@pytest.mark.parametrize(
    "bad, type_name",
    [
        (None, "NoneType"),
        (b"bytes", "bytes"),
        (bytearray(b"bytes"), "bytearray"),
        (42, "int"),
        (1.5, "float"),
        (["nested", "list"], "list"),
        (("nested",), "tuple"),
    ],
    ids=["None", "bytes", "bytearray", "int", "float", "nested-list", "nested-tuple"],
)
def test_non_str_item_names_index_and_type(embedder, bad, type_name):
    texts = ["hello", "world", bad, "paris"]
    with pytest.raises(InvalidInputError) as info:
        embedder.embed(texts)
    msg = str(info.value)
    assert "texts[2]" in msg
    assert "expected str" in msg
    assert f"got {type_name}" in msg
    if isinstance(bad, (bytes, bytearray)):
        assert "decode" in msg
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, E5OnnxError)


@pytest.mark.parametrize("method", ["embed", "embed_queries", "embed_passages", "tokenize"])
def test_non_str_item_refused_by_every_entry_point(embedder, method):
    with pytest.raises(InvalidInputError, match=r"texts\[1\]: expected str, got NoneType"):
        getattr(embedder, method)(["hello", None])


def test_bad_item_index_is_first_bad_one(embedder):
    with pytest.raises(InvalidInputError, match=r"texts\[3\]: expected str, got int") as info:
        embedder.embed(["a", "b", "c", 3, None])
    assert "texts[4]" not in str(info.value)


@pytest.mark.parametrize(
    "texts, reason",
    [(None, "got NoneType"), (b"bytes", "got bytes"), (bytearray(b"x"), "got bytearray"), (42, "got int"),
     (3.5, "got float")],
    ids=["None", "bytes", "bytearray", "int", "float"],
)
def test_bad_texts_argument(embedder, texts, reason):
    with pytest.raises(InvalidInputError) as info:
        embedder.embed(texts)
    msg = str(info.value)
    assert "texts must be a str or a list of str" in msg
    assert reason in msg
    if isinstance(texts, (bytes, bytearray)):
        assert "decode bytes to str first" in msg


def test_lone_surrogate_names_index(embedder):
    with pytest.raises(InvalidInputError) as info:
        embedder.embed(["fine", "ok\ud800x"])
    msg = str(info.value)
    assert "texts[1]" in msg
    assert "surrogate" in msg
    assert "character 2" in msg


def test_lone_surrogate_low_half_and_at_start(embedder):
    with pytest.raises(InvalidInputError, match=r"texts\[0\]: lone surrogate .* at character 0"):
        embedder.embed(["\udc80abc"])


def test_surrogate_pair_written_as_astral_char_is_fine(embedder):
    # A real astral character (one code point) is valid text, unlike a lone surrogate.
    out = embedder.embed(["robots \U0001F916"])
    assert_unit_rows(out)


def test_as_text_list_unit():
    assert as_text_list("x") == ["x"]
    assert as_text_list(("a", "b")) == ["a", "b"]
    assert as_text_list(t for t in ["a", "b"]) == ["a", "b"]
    assert as_text_list([]) == []
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        as_text_list(["a", None])
    with pytest.raises(InvalidInputError, match=r"texts\[0\].*surrogate"):
        as_text_list(["\ud800"])


# ----------------------------------------------------------------------------------------- over-long texts


def test_long_text_is_truncated_to_max_length(embedder):
    words = long_words(300)
    long = " ".join(words)
    (ids,) = embedder.tokenize([long])
    assert len(ids) == embedder.max_length
    # [CLS], the first max_length - 2 word pieces, [SEP]
    (full,) = embedder.tokenize([" ".join(words[: embedder.max_length - 2])])
    assert ids == full
    assert ids[0] == CLS and ids[-1] == SEP


def test_long_text_embedding_equals_cut_text(embedder):
    words = long_words(300)
    long = " ".join(words)
    cut = " ".join(words[: embedder.max_length - 2])
    out = embedder.embed([long, long + " more words", cut])
    assert_unit_rows(out)
    assert np.max(np.abs(out[0] - out[1])) < 1e-6
    assert np.max(np.abs(out[0] - out[2])) < 1e-6


def test_text_of_exactly_max_length_is_accepted_without_truncation(embedder):
    text = " ".join(long_words(embedder.max_length - 2))
    (ids,) = embedder.tokenize([text], truncate=False)
    assert len(ids) == embedder.max_length
    out = embedder.embed([text], truncate=False)
    np.testing.assert_allclose(out, embedder.embed([text]), atol=1e-6, rtol=0)
    # one more word is one token too many
    with pytest.raises(InvalidInputError, match=rf"texts\[0\]: {embedder.max_length + 1} tokens"):
        embedder.embed([text + " paris"], truncate=False)


def test_long_text_refused_without_truncation(embedder, monkeypatch):
    n_words = 300
    long = " ".join(long_words(n_words))
    calls = []
    monkeypatch.setattr(embedder, "_forward", lambda *a, **k: calls.append(a) or pytest.fail("forward ran"))
    with pytest.raises(InvalidInputError) as info:
        embedder.embed(["hello", "world", long, "paris"], truncate=False)
    msg = str(info.value)
    assert "texts[2]" in msg
    assert f"{n_words + 2} tokens" in msg
    assert f"max_length {embedder.max_length}" in msg
    assert calls == []  # refused before any forward pass


def test_long_text_refused_in_later_chunk_names_global_index(embedder, monkeypatch):
    # Tokenisation works in chunks; the error must carry the index in the caller's list, and nothing runs.
    import e5onnx.runtime.embedder as embedder_module

    monkeypatch.setattr(embedder_module, "TOKENIZE_CHUNK", 2)
    long = " ".join(long_words(200))
    calls = []
    monkeypatch.setattr(embedder, "_forward", lambda *a, **k: calls.append(a))
    with pytest.raises(InvalidInputError, match=r"texts\[5\]: 202 tokens"):
        embedder.embed(["a", "b", "c", "d", "e", long], truncate=False)
    assert calls == []


def test_long_text_refused_by_tokenize_and_queries(embedder):
    long = " ".join(long_words(200))
    with pytest.raises(InvalidInputError, match=r"texts\[1\]: 202 tokens"):
        embedder.tokenize(["x", long], truncate=False)
    # "query: " adds two tokens (query, :)
    with pytest.raises(InvalidInputError, match=r"texts\[0\]: 204 tokens"):
        embedder.embed_queries([long], truncate=False)


# ------------------------------------------------------------------------------------- empty / whitespace


EMPTYISH = ["", " ", "   ", "\t", "\n", "\r\n", " \t\n ", "\u3000", "\u00a0"]


def test_empty_and_whitespace_texts_tokenise_to_cls_sep(embedder):
    assert embedder.tokenize(EMPTYISH) == [[CLS, SEP]] * len(EMPTYISH)


def test_empty_and_whitespace_texts_embed_to_one_unit_vector(embedder):
    out = embedder.embed(EMPTYISH)
    assert out.shape == (len(EMPTYISH), embedder.dim)
    assert_unit_rows(out)
    assert np.max(np.abs(out - out[0])) < 1e-6
    # and the same vector when embedded among real texts
    mixed = embedder.embed(["hello world", "", "paris " * 50, "  "])
    assert np.max(np.abs(mixed[1] - out[0])) < 1e-5
    assert np.max(np.abs(mixed[3] - out[0])) < 1e-5


def test_empty_batch_raises_no_warning(embedder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = embedder.embed(["", " ", "\n", "\t"])
        empty = embedder.embed([])
    assert_unit_rows(out)
    assert empty.shape == (0, embedder.dim)


# ------------------------------------------------------------------------------------------- batch size


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, False, "8", None])
def test_bad_batch_size(embedder, batch_size):
    with pytest.raises(InvalidInputError) as info:
        embedder.embed(["hello"], batch_size=batch_size)
    assert "batch_size" in str(info.value)
    assert repr(batch_size) in str(info.value)


def test_bad_batch_size_refused_for_empty_input_too(embedder):
    with pytest.raises(InvalidInputError, match="batch_size"):
        embedder.embed([], batch_size=0)


def test_batch_size_one_equals_default(embedder):
    texts = ["hello world", "", "paris is the capital of france", "robots " * 40, "city", "a b c d e"]
    one = embedder.embed(texts, batch_size=1)
    default = embedder.embed(texts, batch_size=32)
    assert np.max(np.abs(one - default)) < 1e-6


# ------------------------------------------------------------------------------------ values and ordering


MIXED = [
    "paris " * 100,
    "hi",
    "",
    "what is the capital of france",
    "robots " * 20,
    "東京",
    "café crème brûlée",
    "world",
    " ".join(long_words(60)),
    "?",
]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_order_preserved_with_mixed_lengths(embedder, batch_size):
    out = embedder.embed(MIXED, batch_size=batch_size)
    assert out.shape == (len(MIXED), embedder.dim)
    assert_unit_rows(out)
    for i, text in enumerate(MIXED):
        alone = embedder.embed([text])[0]
        assert np.max(np.abs(out[i] - alone)) < 1e-5, (i, text)


def test_order_preserved_across_tokenize_chunks(embedder, monkeypatch):
    import e5onnx.runtime.embedder as embedder_module

    reference = embedder.embed(MIXED)
    monkeypatch.setattr(embedder_module, "TOKENIZE_CHUNK", 3)
    chunked = embedder.embed(MIXED, batch_size=2)
    assert np.max(np.abs(chunked - reference)) < 1e-5


def test_distinct_texts_give_distinct_vectors(embedder):
    out = embedder.embed(["hello world", "paris", "robots"])
    assert np.max(np.abs(out[0] - out[1])) > 1e-3
    assert np.max(np.abs(out[1] - out[2])) > 1e-3


def test_repeated_calls_are_deterministic(embedder):
    a = embedder.embed(MIXED)
    b = embedder.embed(MIXED)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------- prefixes


def test_embed_queries_adds_prefix(embedder):
    np.testing.assert_allclose(embedder.embed_queries(["x"]), embedder.embed(["query: x"]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(embedder.embed_passages(["x"]), embedder.embed(["passage: x"]), atol=1e-6,
                               rtol=0)


def test_embed_queries_single_str(embedder):
    out = embedder.embed_queries("x")
    assert out.shape == (1, embedder.dim)
    np.testing.assert_allclose(out, embedder.embed(["query: x"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("text", ["query: x", "Query: x", "  QUERY:x", "QUERY: x", "query:x"])
def test_prefixed_query_not_prefixed_again(embedder, text):
    assert has_prefix(text, "query: ")
    assert add_prefix([text], "query: ") == [text]
    assert embedder.tokenize([text]) == embedder.tokenize(["query: x"])
    assert np.max(np.abs(embedder.embed_queries([text]) - embedder.embed(["query: x"]))) < 1e-6
    # not doubled: differs from "query: query: x"
    assert np.max(np.abs(embedder.embed_queries([text]) - embedder.embed(["query: query: x"]))) > 1e-4


@pytest.mark.parametrize("text", ["passage: x", "Passage: x", "  PASSAGE:x"])
def test_prefixed_passage_not_prefixed_again(embedder, text):
    assert has_prefix(text, "passage: ")
    assert embedder.tokenize([text]) == embedder.tokenize(["passage: x"])
    assert np.max(np.abs(embedder.embed_passages([text]) - embedder.embed(["passage: x"]))) < 1e-6


def test_other_prefix_gets_query_added(embedder):
    assert not has_prefix("passage: x", "query: ")
    assert add_prefix(["passage: x"], "query: ") == ["query: passage: x"]
    np.testing.assert_allclose(embedder.embed_queries(["passage: x"]), embedder.embed(["query: passage: x"]),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(embedder.embed_passages(["query: x"]), embedder.embed(["passage: query: x"]),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("query: x", True),
        ("Query: x", True),
        ("  QUERY:x", True),
        ("\tquery:", True),
        ("query x", False),
        ("queryx", False),
        ("x query: y", False),
        ("passage: x", False),
        ("", False),
        ("   ", False),
        ("quer", False),
    ],
)
def test_has_prefix_rule(text, expected):
    assert has_prefix(text, "query: ") is expected


def test_add_prefix_unit():
    texts = ["x", "query: y", "QUERY:z", "passage: w", "", "  "]
    assert add_prefix(texts, "query: ") == ["query: x", "query: y", "QUERY:z", "query: passage: w",
                                            "query: ", "query:   "]
    assert add_prefix([], "query: ") == []
    # idempotent
    once = add_prefix(texts, "passage: ")
    assert add_prefix(once, "passage: ") == once


def test_empty_query_is_prefix_only(embedder):
    np.testing.assert_allclose(embedder.embed_queries([""]), embedder.embed(["query: "]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------- iterable inputs


def test_generator_and_tuple_inputs(embedder):
    texts = ["hello world", "", "paris"]
    reference = embedder.embed(texts)
    np.testing.assert_allclose(embedder.embed(tuple(texts)), reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(embedder.embed(t for t in texts), reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(embedder.embed(iter(texts)), reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(embedder.embed_queries(t for t in texts), embedder.embed_queries(texts),
                               atol=1e-6, rtol=0)
    assert embedder.tokenize(t for t in texts) == embedder.tokenize(texts)


def test_generator_with_bad_item_names_index(embedder):
    with pytest.raises(InvalidInputError, match=r"texts\[2\]: expected str, got NoneType"):
        embedder.embed(t for t in ["a", "b", None])


def test_empty_generator(embedder):
    assert embedder.embed(t for t in []).shape == (0, embedder.dim)


# ------------------------------------------------------------------------------------------ load options


@pytest.mark.parametrize("variant", ["bogus", "FP32", "", None, "int4"])
def test_bad_variant(tiny_export, variant):
    with pytest.raises(InvalidInputError) as info:
        Embedder.load(tiny_export, variant=variant)
    assert "variant must be one of" in str(info.value)
    assert repr(variant) in str(info.value)


@pytest.mark.parametrize("threads", [0, -2, "2", 1.0, True])
def test_bad_threads(tiny_export, threads):
    with pytest.raises(InvalidInputError) as info:
        Embedder.load(tiny_export, variant="fp32", threads=threads)
    assert "threads" in str(info.value)
    assert repr(threads) in str(info.value)


def test_max_length_over_manifest_refused(tiny_export):
    with pytest.raises(InvalidInputError, match="max_length must be a whole number from 2 to 128, got 129"):
        Embedder.load(tiny_export, variant="fp32", max_length=129)


@pytest.mark.parametrize("max_length", [1, 0, "64", 2.5])
def test_bad_max_length(tiny_export, max_length):
    with pytest.raises(InvalidInputError, match="max_length"):
        Embedder.load(tiny_export, variant="fp32", max_length=max_length)


def test_smaller_max_length_truncates_earlier(tiny_export):
    small = Embedder.load(tiny_export, variant="fp32", threads=1, max_length=16)
    assert small.max_length == 16
    words = long_words(40)
    (ids,) = small.tokenize([" ".join(words)])
    assert len(ids) == 16
    out = small.embed([" ".join(words), " ".join(words[:14])])
    assert np.max(np.abs(out[0] - out[1])) < 1e-6
    with pytest.raises(InvalidInputError, match=r"texts\[0\]: 42 tokens, over max_length 16"):
        small.embed([" ".join(words)], truncate=False)


# ------------------------------------------------------------------------------ awkward containers and args


class FakeDataFrame:
    """Iterates like a pandas DataFrame: over its column names."""

    columns = ["text"]

    def __iter__(self):
        return iter(self.columns)


@pytest.mark.parametrize("texts, kind", [
    ({"text": "hello world"}, "dict"),
    ({"a", "b"}, "set"),
    (frozenset({"a"}), "frozenset"),
    (FakeDataFrame(), "FakeDataFrame"),
])
def test_mappings_sets_and_tables_are_refused(embedder, texts, kind):
    with pytest.raises(InvalidInputError, match=f"got {kind}"):
        embedder.embed(texts)


def test_numpy_array_of_str_is_accepted(embedder):
    arr = np.array(["hello world", "paris"])
    np.testing.assert_allclose(embedder.embed(arr), embedder.embed(["hello world", "paris"]), atol=1e-6, rtol=0)


def test_numpy_integer_batch_size_accepted_and_non_bool_truncate_refused(embedder):
    np.testing.assert_allclose(embedder.embed(["a b", "c"], batch_size=np.int64(1)),
                               embedder.embed(["a b", "c"]), atol=1e-6, rtol=0)
    with pytest.raises(InvalidInputError, match="truncate must be True, False or 'windows', got 'no'"):
        embedder.embed(["x"], truncate="no")


def test_load_none_is_refused():
    with pytest.raises(InvalidInputError, match="model must be a folder path or a Hub repo id, got None"):
        Embedder.load(None)


def test_threads_over_cpu_count_are_refused(tiny_export, monkeypatch):
    import os

    from e5onnx.config import THREADS_ENV

    with pytest.raises(InvalidInputError, match="threads must be a whole number from 1 to"):
        Embedder.load(tiny_export, variant="fp32", threads=(os.cpu_count() or 1) + 1)
    monkeypatch.setenv(THREADS_ENV, "100000")
    with pytest.raises(InvalidInputError, match="E5ONNX_THREADS='100000'"):
        Embedder.load(tiny_export, variant="fp32")


def test_onnxruntime_failure_is_a_clear_error(tiny_export):
    # max_length above the graph's 128 positions: onnxruntime fails, and the error says on what batch.
    e = Embedder(tiny_export / "model.onnx", tiny_export / "tokenizer.json", max_length=1000, threads=1)
    with pytest.raises(E5OnnxError, match="onnxruntime failed on a batch of 1 texts x 302 tokens"):
        e.embed(" ".join(long_words(300)))


def test_megabyte_texts_are_truncated_quickly_and_exactly(embedder):
    # Texts far over the tokenizer's character budget are cut at a space before tokenising; the ids must
    # be exactly those of tokenising the whole text with truncation.
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(embedder.tokenizer_path))
    full.no_padding()
    full.enable_truncation(embedder.max_length)
    rng = np.random.default_rng(0)
    vocab = ["hello", "world", "東京", "supercalifragilistic", "x\u0301", "a,b", "\t", "\n", "paris"]
    texts = [" ".join(rng.choice(vocab, size=n)) for n in (3000, 20000, 200000)]
    texts += ["x" * 50000, " " * 40000 + "hello world " * 10]
    assert embedder.tokenize(texts) == [e.ids for e in full.encode_batch(texts)]
    hello = full.token_to_id("hello")  # 12 MB: tokenising it whole for the reference would take seconds
    assert embedder.tokenize(["hello " * 2_000_000]) == [[CLS] + [hello] * 126 + [SEP]]


def test_invisible_leading_characters_do_not_defeat_the_prefix_rule(embedder):
    assert has_prefix("\ufeffquery: x", "query: ") and has_prefix("\u200b query: x", "query: ")
    assert embedder.tokenize(add_prefix(["\ufeffquery: x"], "query: ")) == embedder.tokenize(["query: x"])


def test_tokenize_checks_truncate_too(embedder):
    with pytest.raises(InvalidInputError, match="truncate must be True, False or 'windows', got 'no'"):
        embedder.tokenize(["a"], truncate="no")
