"""The request-level API: ``Embedder.prepare`` (validate, prefix, tokenise) then ``Embedder.run`` (embed)."""

import numpy as np
import pytest

from e5onnx import Embedder, InvalidInputError
from e5onnx.errors import TextError


@pytest.fixture(scope="module")
def embedder(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


LONG = " ".join(["paris"] * 200)  # 202 tokens with [CLS] and [SEP], over the tiny export's 128


def test_prepare_gives_the_tokenizers_ids_and_counts(embedder):
    texts = ["hello world", "", LONG]
    p = embedder.prepare(texts)
    assert p.input_ids == embedder.tokenize(texts)
    assert p.input_ids[1] == p.input_ids[1][:1] + p.input_ids[1][-1:] and len(p.input_ids[1]) == 2  # [CLS] [SEP]
    assert p.token_counts.tolist() == [len(r) for r in p.input_ids] and p.token_counts[2] == 128
    assert p.tokens == sum(p.token_counts) and len(p) == 3 and p.errors == () and p.kind is None


def test_prepare_adds_the_kind_prefix_once(embedder):
    p = embedder.prepare(["paris", "query: paris", "Query:paris"], kind="query")
    want = embedder.tokenize(["query: paris"])[0]
    assert p.input_ids == [want, want, want] and p.kind == "query"
    assert embedder.prepare("paris", kind="passage").input_ids == embedder.tokenize(["passage: paris"])
    with pytest.raises(InvalidInputError, match="kind must be 'query', 'passage' or None, got 'doc'"):
        embedder.prepare(["x"], kind="doc")


def test_prepare_reports_each_refused_text_by_index(embedder):
    p = embedder.prepare(["fine", None, LONG, "\ud800", "also fine"], truncate=False)
    assert [e.index for e in p.errors] == [1, 2, 3]
    assert all(isinstance(e, TextError) for e in p.errors)
    assert str(p.errors[0]) == "texts[1]: expected str, got NoneType"
    assert str(p.errors[1]) == "texts[2]: 202 tokens, over max_length 128, and truncation is off"
    assert str(p.errors[1].named("input")) == "input[2]: 202 tokens, over max_length 128, and truncation is off"
    assert p.input_ids[1] == p.input_ids[2] == p.input_ids[3] == []
    assert p.input_ids[4] == embedder.tokenize(["also fine"])[0]
    with pytest.raises(TextError, match=r"texts\[1\]: expected str") as info:
        embedder.run(p)
    assert info.value.index == 1


def test_run_equals_embed_and_keeps_each_part_apart(embedder):
    a, b = ["query: paris", LONG, "x"], ["passage: the eiffel tower is in paris"] * 2
    pa, pb = embedder.prepare(a), embedder.prepare(b)
    np.testing.assert_array_equal(embedder.run(pa), embedder.embed(a))
    va, vb = embedder.run([pa, pb], normalize=[True, False])
    np.testing.assert_allclose(va, embedder.embed(a), atol=1e-6, rtol=0)
    raw = embedder.embed_token_ids(pb.input_ids, normalize=False)
    np.testing.assert_allclose(vb, raw, atol=1e-6, rtol=0)
    assert abs(np.linalg.norm(vb[0]) - 1) > 1e-3  # really not normalised
    assert embedder.run(embedder.prepare([])).shape == (0, embedder.dim)


def test_run_refuses_what_it_cannot_trust(embedder, tiny_export):
    other = Embedder.load(tiny_export, variant="fp32", threads=1)
    with pytest.raises(InvalidInputError, match="made by another Embedder"):
        embedder.run(other.prepare(["x"]))
    p = embedder.prepare(["x"])
    with pytest.raises(InvalidInputError, match=r"one bool per Prepared \(2\)"):
        embedder.run([p, p], normalize=[True])
    with pytest.raises(InvalidInputError, match=r"prepared\[1\] must be a Prepared"):
        embedder.run([p, [[101, 102]]])
    with pytest.raises(InvalidInputError, match="batch_size must be a whole number >= 1, got 0"):
        embedder.run(p, batch_size=0)
