"""Tokenisation with the Rust ``tokenizers`` library (any fast tokenizer's ``tokenizer.json``: BERT's WordPiece,
XLM-RoBERTa's SentencePiece Unigram), truncation and padding set explicitly.

The settings stored in ``tokenizer.json`` (all-MiniLM's, for example, pad every text to 128 and truncate at
128) are overridden: no padding (batches are padded to their longest text by the embedder) and
truncation at the model folder's ``max_length`` counted with the special tokens (``[CLS]``/``[SEP]`` for BERT,
``<s>``/``</s>`` for XLM-RoBERTa: the file's post-processor adds them), as Hugging Face's fast tokenizer does
with ``truncation=True, max_length=N``.
"""

import json
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..config import CHARS_PER_TOKEN_BUDGET
from ..errors import ModelFolderError


class _Head(str):
    """The head of a long text, remembering the full text for the fallback."""

    def __new__(cls, head, full):
        obj = super().__new__(cls, head)
        obj.full = full
        return obj


class TextTokenizer:
    """Tokenise texts into ``input_ids`` and pad batches.

    Args:
        path: ``tokenizer.json`` of a Hugging Face fast tokenizer.
        max_length: largest number of tokens per text, special tokens included.
        pad_token_id: id used for padding; by default :func:`default_pad_id` (``tokenizer.json``'s padding id,
            else the id of ``[PAD]`` or ``<pad>``, else 0). A model folder's manifest records the HF tokenizer's.

    Raises:
        ModelFolderError: the file cannot be read as a tokenizer.
    """

    def __init__(self, path, max_length, pad_token_id=None):
        path = Path(path)
        try:
            self._truncating = Tokenizer.from_file(str(path))
            self._full = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelFolderError(f"cannot read tokenizer {str(path)!r}: {exc}") from exc
        self.max_length = int(max_length)
        if pad_token_id is None:
            pad_token_id = default_pad_id(self._full)
        #: Whether the long-text fast path may cut a text at whitespace (:func:`splits_at_whitespace`).
        self.fast_path = splits_at_whitespace(self._full)
        for tok in (self._truncating, self._full):
            tok.no_padding()
            tok.no_truncation()
        self._truncating.enable_truncation(self.max_length)
        vocab = self._full.get_vocab_size(with_added_tokens=True)
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or not 0 <= pad_token_id < vocab:
            raise ModelFolderError(f"pad_token_id {pad_token_id!r} is not an id of {str(path)!r} (vocab {vocab})")
        self.pad_token_id = pad_token_id
        #: Number of token ids (added tokens included): ids run from 0 to ``vocab_size - 1``.
        self.vocab_size = vocab
        #: Ids of the special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ...): the added tokens marked special.
        self.special_ids = frozenset(i for i, t in self._full.get_added_tokens_decoder().items() if t.special)
        # Texts longer than this many characters are cut at a space before tokenising (see _encode_long).
        self.char_budget = CHARS_PER_TOKEN_BUDGET * self.max_length

    def encode(self, texts, truncate=True):
        """Token ids of each text, special tokens included.

        Args:
            texts: list of validated ``str``.
            truncate: cut each text to ``max_length`` tokens; when False, every token is kept (the caller
                refuses the rows over ``max_length``).

        Returns:
            list of lists of int.
        """
        if not texts:
            return []
        tok = self._truncating if truncate else self._full
        if truncate:
            texts = [self._head(t) for t in texts]
        if len(texts) == 1:  # one text: encode directly, no batch (thread pool) round trip
            encodings = [tok.encode(texts[0], add_special_tokens=True)]
        else:
            encodings = tok.encode_batch(texts, add_special_tokens=True)
        ids = [enc.ids for enc in encodings]
        if truncate:
            for i, text in enumerate(texts):
                if isinstance(text, _Head) and not self._head_holds(encodings[i], text):
                    ids[i] = self._truncating.encode(text.full, add_special_tokens=True).ids
        return ids

    def encodings(self, texts, add_special_tokens=True):
        """The ``tokenizers.Encoding`` of each text (ids, tokens, character offsets, special-tokens mask), neither
        truncated nor padded.

        Args:
            texts: list of validated ``str``.
        """
        return self._full.encode_batch(texts, add_special_tokens=add_special_tokens) if texts else []

    def _head(self, text):
        """A prefix of a very long ``text`` (cut at a space or newline) for the fast path, or ``text`` itself.

        Where the pre-tokeniser splits at whitespace (:attr:`fast_path`: BERT's, XLM-RoBERTa's Metaspace) and
        the normalisers act per character or on whitespace runs, cutting at whitespace keeps every earlier
        piece, hence every earlier token, unchanged. When the head's tokens fill ``max_length`` before its end
        (:meth:`_head_holds`), truncating it gives exactly what truncating the whole text gives, without
        tokenising megabytes. Otherwise (few tokens per character, no whitespace) the caller falls back to
        the full text.
        """
        if len(text) <= self.char_budget or not self.fast_path:
            return text
        cut = max(text.rfind(" ", 0, self.char_budget), text.rfind("\n", 0, self.char_budget))
        return _Head(text[:cut], text) if cut > 0 else text

    def _head_holds(self, encoding, head):
        """True when the truncated ``encoding`` of ``head`` is what the full text's truncation gives: it fills
        ``max_length`` and its last kept token ends before the head's trailing whitespace. (That whitespace is
        the only thing the cut changes: XLM-RoBERTa's Metaspace makes ``"word "`` ``▁word ▁``, where the full
        text's ``"word  next"`` gives ``▁word ▁next``.)"""
        if len(encoding.ids) < self.max_length:  # the head was too short
            return False
        kept = [end for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask) if not special]
        return bool(kept) and kept[-1] <= len(head.rstrip())

    @cached_property
    def framing_ids(self):
        """``(head, tail)``: the special-token ids the tokenizer puts before and after one text (BERT:
        ``[CLS]`` / ``[SEP]``; XLM-R: ``<s>`` / ``</s>``), read from its post-processor on a one-word text."""
        enc = self._full.encode("a", add_special_tokens=True)
        mask = enc.special_tokens_mask
        first = mask.index(0)
        last = len(mask) - mask[::-1].index(0)
        return enc.ids[:first], enc.ids[last:]

    def plain_ids(self, text):
        """Token ids of ``text`` without special tokens (e.g. an e5 prefix's)."""
        return self._full.encode(text, add_special_tokens=False).ids

    def pad(self, rows, dtype=np.int64):
        """Pad token-id rows to the longest one.

        Returns:
            ``(input_ids, attention_mask)``, both ``(len(rows), longest)`` of ``dtype``.
        """
        longest = max(len(r) for r in rows)
        input_ids = np.full((len(rows), longest), self.pad_token_id, dtype=dtype)
        attention_mask = np.zeros((len(rows), longest), dtype=dtype)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask


#: Pre-tokenisers (``tokenizer.json`` ``type``) whose pieces never span whitespace: the long-text fast path may cut
#: there. ``Metaspace`` counts when its ``split`` is on (the default; XLM-RoBERTa's), ``ByteLevel`` with its regex.
_SPLITS_AT_WHITESPACE = ("BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Metaspace", "ByteLevel")


def splits_at_whitespace(tokenizer):
    """True when ``tokenizer``'s pre-tokeniser (or one of a ``Sequence``'s) splits the text at whitespace, so no
    token spans a space: BERT's ``BertPreTokenizer``, XLM-RoBERTa's ``Metaspace`` (with ``split``)."""
    def splits(spec):
        if not isinstance(spec, dict):
            return False
        if spec.get("type") == "Sequence":
            return any(splits(s) for s in spec.get("pretokenizers", []))
        return spec.get("type") in _SPLITS_AT_WHITESPACE and spec.get("split", True) and spec.get("use_regex", True)

    return splits(json.loads(tokenizer.to_str()).get("pre_tokenizer"))


def default_pad_id(tokenizer):
    """Padding id of a ``tokenizers.Tokenizer`` without one given: its ``tokenizer.json`` padding's ``pad_id``,
    else the id of ``[PAD]`` (BERT) or ``<pad>`` (XLM-RoBERTa: 1), else 0."""
    padding = tokenizer.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return padding["pad_id"]
    found = [tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>")]
    return next((i for i in found if i is not None), 0)
