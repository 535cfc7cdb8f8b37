"""Token ids equal the Hugging Face fast tokenizer's (the reference), with explicit truncation and no padding."""

import pytest

from e5onnx.export.battery import battery
from e5onnx.runtime.tokenizer import TextTokenizer

from conftest import MINILM, requires_shared

UNICODE_TEXTS = [
    "query: how much protein should a female eat",
    "Crème brûlée à la française — Ångström, naïve, façade, Œuvre",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "🤖 robots ❤️ emoji 🎉 👩‍👩‍👧 flags 🇫🇷",
    "مرحبا بالعالم — Привет, мир — Γειά σου Κόσμε — שלום עולם",
    "e\u0301te\u0301 zero\u200bwidth\u00a0nbsp\u3000ideographic space",
    "control\x00chars\x07and\ttabs\r\nnewlines",
    "",
    "   ",
    "UPPER lower MiXeD 123,456.789 $5 @user #tag https://example.com/a?b=c",
    "ﬁ ligature, ½ fraction, Ⅻ numeral, ｆｕｌｌｗｉｄｔｈ",
]


@requires_shared
@pytest.mark.parametrize("max_length", [512, 16])
def test_token_ids_equal_hf_fast_tokenizer(max_length):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(MINILM), use_fast=True)
    ours = TextTokenizer(MINILM / "tokenizer.json", max_length)
    texts = UNICODE_TEXTS + battery()
    want = hf(texts, truncation=True, max_length=max_length)["input_ids"]
    assert ours.encode(texts) == want
    assert max(len(ids) for ids in ours.encode(texts)) == max_length  # the long battery text is cut


@requires_shared
def test_tokenizer_json_padding_and_truncation_are_overridden():
    # MiniLM's tokenizer.json pads to 128 and truncates at 128; e5 uses 512 and pads per batch.
    ours = TextTokenizer(MINILM / "tokenizer.json", 512)
    assert ours.encode(["hello"])[0] == [101, 7592, 102]
    assert len(ours.encode([" ".join(["word"] * 300)])[0]) == 302


def test_tiny_tokenizer_matches_hf(tiny_bert_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_bert_dir), use_fast=True)
    ours = TextTokenizer(tiny_bert_dir / "tokenizer.json", 128)
    assert ours.encode(UNICODE_TEXTS) == hf(UNICODE_TEXTS, truncation=True, max_length=128)["input_ids"]


def test_pad_builds_mask(tiny_bert_dir):
    tok = TextTokenizer(tiny_bert_dir / "tokenizer.json", 128)
    assert tok.pad_token_id == 0
    ids, mask = tok.pad([[101, 5, 102], [101, 102]])
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
