"""WordPiece tokenisation with the Rust ``tokenizers`` library, truncation and padding set explicitly.

The settings stored in ``tokenizer.json`` (all-MiniLM's, for example, pad every text to 128 and truncate at
128) are overridden: no padding (batches are padded to their longest text by the embedder) and
truncation at the model folder's ``max_length`` counted with the special tokens, as Hugging Face's fast
tokenizer does with ``truncation=True, max_length=N``.
"""

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
        pad_token_id: id used for padding; by default the id of ``[PAD]`` (else 0).

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
        for tok in (self._truncating, self._full):
            tok.no_padding()
            tok.no_truncation()
        self._truncating.enable_truncation(self.max_length)
        if pad_token_id is None:
            pad_token_id = self._full.token_to_id("[PAD]") or 0
        vocab = self._full.get_vocab_size(with_added_tokens=True)
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or not 0 <= pad_token_id < vocab:
            raise ModelFolderError(f"pad_token_id {pad_token_id!r} is not an id of {str(path)!r} (vocab {vocab})")
        self.pad_token_id = pad_token_id
        #: Number of token ids (added tokens included): ids run from 0 to ``vocab_size - 1``.
        self.vocab_size = vocab
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
            ids = [tok.encode(texts[0], add_special_tokens=True).ids]
        else:
            ids = [enc.ids for enc in tok.encode_batch(texts, add_special_tokens=True)]
        if truncate:
            for i, text in enumerate(texts):
                if isinstance(text, _Head) and len(ids[i]) < self.max_length:  # the head was too short
                    ids[i] = self._truncating.encode(text.full, add_special_tokens=True).ids
        return ids

    def _head(self, text):
        """A prefix of a very long ``text`` whose tokens are a prefix of the full text's tokens.

        BERT's normaliser and pre-tokeniser act per character and split at whitespace, so cutting at a
        whitespace character keeps every earlier word piece unchanged. When the head still yields
        ``max_length`` tokens, truncating it gives exactly what truncating the whole text gives, without
        tokenising megabytes. Otherwise (few tokens per character, no whitespace) the caller falls back
        to the full text.
        """
        if len(text) <= self.char_budget:
            return text
        cut = max(text.rfind(" ", 0, self.char_budget), text.rfind("\n", 0, self.char_budget))
        return _Head(text[:cut], text) if cut > 0 else text

    @cached_property
    def special_ids(self):
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
