"""Token ids equal the Hugging Face fast tokenizer's (the reference), with explicit truncation and no padding."""

import json

import pytest
from conftest import MINILM, requires_shared

from e5onnx.errors import ModelFolderError
from e5onnx.export.battery import battery
from e5onnx.runtime.tokenizer import CHARS_PER_TOKEN_BUDGET, TextTokenizer, _Head

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


def _wordpiece_file(path, vocab):
    """Save a BERT-style WordPiece ``tokenizer.json`` with the given vocabulary order to ``path``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    tok.save(str(path))
    return path


def test_pad_uses_the_vocabulary_pad_id(tmp_path):
    path = _wordpiece_file(tmp_path / "tokenizer.json", ["[UNK]", "[CLS]", "[SEP]", "hello", "[PAD]", "world"])
    tok = TextTokenizer(path, 16)
    assert tok.pad_token_id == 4  # looked up, not the fallback 0
    rows = tok.encode(["hello world", "hello"])
    assert rows == [[1, 3, 5, 2], [1, 3, 2]]
    ids, mask = tok.pad(rows)
    assert ids.tolist() == [[1, 3, 5, 2], [1, 3, 2, 4]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert TextTokenizer(path, 16, pad_token_id=5).pad([[1, 2], [1]])[0].tolist() == [[1, 2], [1, 5]]


def test_pad_id_without_a_pad_token_is_zero_and_out_of_range_ids_are_refused(tmp_path):
    path = _wordpiece_file(tmp_path / "tokenizer.json", ["[UNK]", "[CLS]", "[SEP]", "hello"])
    assert TextTokenizer(path, 16).pad_token_id == 0
    with pytest.raises(ModelFolderError, match=r"pad_token_id 4 is not an id of .*tokenizer.json.* \(vocab 4\)"):
        TextTokenizer(path, 16, pad_token_id=4)


def test_unreadable_tokenizer_names_the_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"not": "a tokenizer"}), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="cannot read tokenizer .*tokenizer.json"):
        TextTokenizer(path, 16)


# ------------------------------------------------------------------ truncation at 512, long-text fast path

#: Words that are one token in both the tiny vocabulary and MiniLM's (bert-base-uncased).
ONE_TOKEN = ("hello", "world", "paris", "city")
#: Several word pieces in both vocabularies (20 in the tiny one, 6 in MiniLM's).
MANY_PIECES = "supercalifragilistic"


@pytest.fixture(scope="module", params=["tiny", pytest.param("minilm", marks=requires_shared)])
def at_512(request):
    """``(ours, hf)``: our tokenizer at max length 512 and the Hugging Face fast tokenizer of the same folder."""
    from transformers import AutoTokenizer

    folder = request.getfixturevalue("tiny_bert_dir") if request.param == "tiny" else MINILM
    return TextTokenizer(folder / "tokenizer.json", 512), AutoTokenizer.from_pretrained(str(folder), use_fast=True)


def _words(n):
    return " ".join(ONE_TOKEN[i % len(ONE_TOKEN)] for i in range(n))


def _hf(hf, texts):
    return hf(texts, truncation=True, max_length=512)["input_ids"]


@pytest.mark.parametrize("tokens", [511, 512, 513, 514])
def test_truncation_at_512_equals_hf(at_512, tokens):
    ours, hf = at_512
    text = _words(tokens - 2)  # [CLS] + words + [SEP]
    assert len(hf(text)["input_ids"]) == tokens  # (the HF tokenizer itself, without truncation)
    (ids,) = ours.encode([text])
    assert ids == _hf(hf, [text])[0]
    assert len(ids) == min(tokens, 512) and ids[-1] == hf.sep_token_id and ids[0] == hf.cls_token_id
    # alone (the one-text path) and in a batch (encode_batch) alike
    assert ours.encode([text, "hello"])[0] == ids
    # without truncation every token is kept (Embedder.prepare refuses a row over max length: test_prepared.py)
    full = ours.encode(["a", text], truncate=False)[1]
    assert len(full) == tokens and full[:511] == ids[:511]


@pytest.mark.parametrize("before", [508, 509, 510])
def test_truncation_inside_a_word_of_many_pieces_equals_hf(at_512, before):
    """The cut at 512 falls inside a word of several pieces: its first pieces are kept, the rest dropped."""
    ours, hf = at_512
    assert len(hf(MANY_PIECES, add_special_tokens=False)["input_ids"]) >= 6
    text = f"{_words(before)} {MANY_PIECES} {_words(20)}"
    (ids,) = ours.encode([text])
    assert ids == _hf(hf, [text])[0] and len(ids) == 512
    piece_ids = hf(MANY_PIECES, add_special_tokens=False)["input_ids"]
    assert ids[1 + before:511] == piece_ids[:510 - before]  # the word's first pieces, then [SEP]


def _long_texts(budget):
    """Texts over the ``budget`` characters of the fast path, with what ``_head`` must do: True (cut at a space or
    newline), False (left whole)."""
    step = "hello world "  # 12 characters, 2 tokens
    across = step * ((budget - 5) // len(step))
    across += "x" * (budget - 5 - len(across))  # the next word starts 5 characters before the budget ...
    return {
        "spaces": (step * (2 * budget // len(step)), True),
        "newlines": ("hello\nworld\n" * (2 * budget // 12), True),
        "crlf": ("hello world\r\n" * (2 * budget // 13), True),
        "word across the cut": (across + " " + MANY_PIECES * 4 + " " + step * 50, True),  # ... and ends after it
        "head too short": ("hello " * 3 + "x" * budget + " paris " + step * 20, True),  # falls back to the text
        "no whitespace": ("x" * (budget + 100), False),
        "punctuation only": ("a,b." * (budget // 2), False),
        "cjk": ("東京" * budget, False),
        "tabs": ("hello\tworld\t" * (2 * budget // 12), False),
        "budget + 1": ("a " * (budget // 2) + "b", True),
    }


@pytest.mark.parametrize("name", list(_long_texts(100)))
def test_long_text_fast_path_equals_hf(at_512, name):
    ours, hf = at_512
    budget = CHARS_PER_TOKEN_BUDGET * 512
    assert ours.char_budget == budget == 16384
    text, cut = _long_texts(budget)[name]
    assert len(text) > budget
    head = ours._head(text)
    if cut:
        assert isinstance(head, _Head) and len(head) < budget and text.startswith(head)
    else:
        assert head is text
    assert ours.encode([text]) == _hf(hf, [text])
    assert ours.encode([text, "hello"])[0] == _hf(hf, [text])[0]


def _cut_before_a_word(budget, pieces):
    """A text whose head (up to its last space before ``budget`` characters) is exactly ``pieces`` tokens without
    the specials: one word of over 100 characters (a single [UNK]) and ``pieces - 1`` times "hello"; then a word
    of many pieces that spans the budget; then more words."""
    space = budget - 10  # the cut: the last space before the budget
    head = "x" * (space - 6 * (pieces - 1)) + " hello" * (pieces - 1)
    return head + " " + MANY_PIECES * 3 + " " + _words(30), head


@pytest.mark.parametrize("pieces", [511, 510, 509, 505])
def test_long_text_head_at_the_max_length_boundary_equals_hf(at_512, pieces):
    """The head of a long text is used only if it alone fills max length (510 pieces + [CLS]/[SEP]); with 509
    or fewer the text is tokenised whole, and the first pieces of the word across the cut come after the head's."""
    ours, hf = at_512
    text, head = _cut_before_a_word(ours.char_budget, pieces)
    assert ours._head(text) == head and len(hf(head, add_special_tokens=False)["input_ids"]) == pieces
    (ids,) = ours.encode([text])
    assert ids == _hf(hf, [text])[0] and len(ids) == 512
    word = hf(MANY_PIECES * 3, add_special_tokens=False)["input_ids"]
    assert ids[1 + pieces:511] == word[:max(0, 510 - pieces)]


def test_text_of_exactly_the_budget_is_tokenised_whole(at_512):
    ours, hf = at_512
    text = "a " * (ours.char_budget // 2)
    assert len(text) == ours.char_budget and ours._head(text) is text
    assert ours.encode([text]) == _hf(hf, [text])
