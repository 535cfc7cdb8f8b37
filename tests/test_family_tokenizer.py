"""XLM-RoBERTa's tokenizer (multilingual e5) in the runtime, without a model: token ids equal the Hugging Face fast
tokenizer's (``<s> ... </s>``, pad id 1), truncation at 512 and the long-text fast path included."""

import json

import pytest
from family_models import MULTILINGUAL_TEXTS, XLMR_SPECIALS
from test_tokenizer import UNICODE_TEXTS

from e5onnx.export.battery import battery
from e5onnx.runtime.tokenizer import TextTokenizer, _Head, default_pad_id, splits_at_whitespace

#: A character the trained vocabulary lacks: a run of it is one ``<unk>`` (after a ``▁`` token).
RARE = "ꙮ"


@pytest.fixture(scope="module")
def xlmr(xlmr_tokenizer_dir):
    """``(ours, hf)`` at max length 512 for the trained XLM-RoBERTa-style tokenizer."""
    from transformers import AutoTokenizer

    return (TextTokenizer(xlmr_tokenizer_dir / "tokenizer.json", 512),
            AutoTokenizer.from_pretrained(str(xlmr_tokenizer_dir), use_fast=True))


def _hf(hf, texts, max_length=512):
    return hf(texts, truncation=True, max_length=max_length)["input_ids"]


def _one_token_word(hf):
    """A word of 4+ letters that is one token (``▁word``) of the vocabulary, alone and repeated."""
    for token, i in sorted(hf.get_vocab().items(), key=lambda kv: kv[1]):
        word = token[1:]
        if token.startswith("▁") and len(word) >= 4 and word.isascii() and word.isalpha() \
                and hf(f"{word} {word}", add_special_tokens=False)["input_ids"] == [i, i]:
            return word
    raise AssertionError("no one-token word in the vocabulary")


def test_the_tokenizer_has_xlm_robertas_layout(xlmr):
    ours, hf = xlmr
    assert type(hf).__name__ == "XLMRobertaTokenizerFast" and hf.is_fast
    assert {t: hf.convert_tokens_to_ids(t) for t in XLMR_SPECIALS} == XLMR_SPECIALS
    encoded = hf("hello")
    assert encoded["input_ids"][0] == 0 and encoded["input_ids"][-1] == 2 and "token_type_ids" not in encoded
    assert ours.pad_token_id == hf.pad_token_id == 1  # <pad>, not 0 (which is <s>)


@pytest.mark.parametrize("max_length", [512, 16])
def test_token_ids_equal_hf_fast_tokenizer(xlmr_tokenizer_dir, xlmr, max_length):
    ours, hf = TextTokenizer(xlmr_tokenizer_dir / "tokenizer.json", max_length), xlmr[1]
    texts = MULTILINGUAL_TEXTS + UNICODE_TEXTS + battery()
    got = ours.encode(texts)
    assert got == _hf(hf, texts, max_length)
    assert all(row[0] == 0 and row[-1] == 2 for row in got)  # <s> ... </s>, also when cut
    assert max(len(row) for row in got) == max_length
    assert any(3 in row for row in got)  # characters outside the vocabulary are <unk>, as in HF


def test_batches_are_padded_with_pad_id_1(xlmr):
    ours, _ = xlmr
    ids, mask = ours.pad(ours.encode(["hello world, a longer text", "a"]))
    assert (ids[1][mask[1] == 0] == 1).all() and mask[1].sum() < mask[0].sum()


@pytest.mark.parametrize("tokens", [511, 512, 513, 514])
def test_truncation_at_512_equals_hf(xlmr, tokens):
    ours, hf = xlmr
    text = " ".join([_one_token_word(hf)] * (tokens - 2))  # <s> + words + </s>
    assert len(hf(text)["input_ids"]) == tokens
    (ids,) = ours.encode([text])
    assert ids == _hf(hf, [text])[0] and len(ids) == min(tokens, 512) and (ids[0], ids[-1]) == (0, 2)
    assert ours.encode(["a", text])[1] == ids  # in a batch too


def test_long_text_fast_path_equals_hf(xlmr):
    ours, hf = xlmr
    text = "passage: " + " ".join(["Привет мир, the quick fox 東京"] * 2000)
    assert len(text) > ours.char_budget
    assert isinstance(ours._head(text), _Head)  # cut at a space: Metaspace splits there
    assert ours.encode([text]) == _hf(hf, [text]) and len(ours.encode([text])[0]) == 512


def test_a_head_that_ends_in_whitespace_is_not_trusted(xlmr):
    """The cut falls between two spaces: the head ``P + " "`` gives Metaspace's lone ``▁`` as its 510th piece where
    the full text (runs of spaces collapsed) continues with the next word; the full text is tokenised instead."""
    ours, hf = xlmr
    word = _one_token_word(hf)
    words = " " + " ".join([word] * 507)  # 507 tokens, after RARE * n: "▁" + <unk> = 2 tokens
    head = RARE * (ours.char_budget - 10 - len(words)) + words
    assert len(hf(head, add_special_tokens=False)["input_ids"]) == 509
    text = head + "  " + word + RARE * ours.char_budget + " " + " ".join([word] * 20)
    assert ours._head(text) == head + " "  # the last space before the budget is the second of the two
    want = _hf(hf, [text])[0]
    trap = ours._truncating.encode(head + " ").ids
    assert len(trap) == 512 and trap != want  # what taking the head would have given
    assert ours.encode([text]) == [want] and ours.encode([text, "a"])[0] == want


def _saved(tokenizer, path):
    tokenizer.save(str(path))
    return path


def test_fast_path_only_where_pieces_never_span_whitespace(xlmr_tokenizer_dir, tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers

    tok = Tokenizer.from_file(str(xlmr_tokenizer_dir / "tokenizer.json"))
    assert splits_at_whitespace(tok)
    for pre, splits in [(pre_tokenizers.BertPreTokenizer(), True),
                        (pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.Metaspace()]), True),
                        (pre_tokenizers.Metaspace(split=False), False), (pre_tokenizers.Digits(), False)]:
        tok.pre_tokenizer = pre
        assert splits_at_whitespace(tok) is splits, pre
    # Metaspace without split: no fast path, the whole text is tokenised (same ids as the library's truncation)
    ours = TextTokenizer(_saved(tok, tmp_path / "tokenizer.json"), 64)
    text = " ".join(["hello world"] * 2000)
    assert not ours.fast_path and ours._head(text) is text
    tok.enable_truncation(64)
    assert ours.encode([text]) == [tok.encode(text).ids]


def test_default_pad_id_reads_the_tokenizer(xlmr_tokenizer_dir, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(xlmr_tokenizer_dir / "tokenizer.json"))
    assert tok.padding is None and default_pad_id(tok) == 1  # <pad>
    tok.enable_padding(pad_id=3, pad_token="<unk>")  # tokenizer.json's own padding settings come first
    assert default_pad_id(tok) == 3
    assert TextTokenizer(_saved(tok, tmp_path / "tokenizer.json"), 16).pad_token_id == 3
    spec = json.loads(tok.to_str())
    assert spec["padding"]["pad_id"] == 3
