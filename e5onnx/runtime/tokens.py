"""The Embedder's token-level API: each text's tokens with ids and offsets (what a ``/tokenize`` route shows), and
token ids made elsewhere, checked and embedded like texts.

:class:`TokenLevel` is a base class of :class:`~e5onnx.runtime.Embedder`; its methods are the Embedder's
(:meth:`~TokenLevel.tokens`, :meth:`~TokenLevel.prepare_ids`, :meth:`~TokenLevel.embed_token_ids`).
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..config import DEFAULT_BATCH_SIZE, TRUNCATE_WINDOWS
from ..errors import InvalidInputError, TextError
from .arguments import flag
from .prepared import Prepared, with_prefix
from .texts import as_text_list


class Token(NamedTuple):
    """One token of a text.

    Attributes:
        id: its token id.
        text: the characters of the text it covers (``"Héllo"`` for the uncased ``hello``, ``"ffa"`` for
            ``##ffa``); for a special token, its own string (``"[CLS]"``).
        special: True for a special token (``[CLS]``, ``[SEP]``, ... as the tokenizer marks them).
        start, stop: character offsets into the tokenised text (``text == tokenised[start:stop]``, Hugging
            Face's ``offset_mapping``); None for a special token.
    """

    id: int
    text: str
    special: bool
    start: int = None
    stop: int = None


@dataclass(frozen=True)
class TokenizedText:
    """One text as the tokenizer sees it: :attr:`text` (the prefix added, if any) and its :attr:`tokens`."""

    text: str
    tokens: tuple

    @property
    def ids(self):
        """The token ids (list of int): what :meth:`~e5onnx.runtime.Embedder.tokenize` gives, untruncated."""
        return [t.id for t in self.tokens]

    def byte_offsets(self):
        """``[(start, stop)]`` per token as UTF-8 byte offsets into :attr:`text` (``(None, None)`` for a special
        token): the offsets Rust ``tokenizers`` and text-embeddings-inference report."""
        codes = np.frombuffer(self.text.encode("utf-32-le"), dtype="<u4")
        widths = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
        at = np.concatenate(([0], np.cumsum(widths)))
        return [(None, None) if t.special else (int(at[t.start]), int(at[t.stop])) for t in self.tokens]


def tokenized(text, encoding):
    """The :class:`TokenizedText` of ``text`` from its ``tokenizers.Encoding`` (ids, tokens, character offsets,
    special-tokens mask)."""
    tokens = tuple(Token(i, tok, True) if special else Token(i, text[start:stop], False, start, stop)
                   for i, tok, (start, stop), special
                   in zip(encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask))
    return TokenizedText(text, tokens)


def row_problem(row, vocab_size):
    """Why ``row`` is not a usable list of token ids (``"token id 30522 at position 3 is not in the vocabulary
    (0 to 30521)"``), or None."""
    if isinstance(row, np.ndarray) and row.ndim == 1:
        row = row.tolist()
    if not isinstance(row, (list, tuple)) or not row:
        got = "an empty one" if isinstance(row, (list, tuple)) else type(row).__name__
        return f"must be a non-empty list of token ids, got {got}"
    if all(type(t) is int for t in row) and min(row) >= 0 and max(row) < vocab_size:
        return None  # the common case, checked fast
    for position, t in enumerate(row):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            return f"token id {t!r} at position {position} is not an integer"
        if not 0 <= t < vocab_size:
            return f"token id {t} at position {position} is not in the vocabulary (0 to {vocab_size - 1})"
    return None


def cut_ids(row, max_length, special_ids):
    """``row`` cut to ``max_length`` ids: its first ``max_length - 1`` and its last when that is a special token
    (``[SEP]``), else its first ``max_length``. For the ids of a text (``[CLS] ... [SEP]``) this gives exactly
    the ids of the text truncated by the tokenizer."""
    if len(row) <= max_length:
        return row
    return row[:max_length - 1] + row[-1:] if row[-1] in special_ids else row[:max_length]


class TokenLevel:
    """The Embedder's token-level methods (see the module docstring); needs ``_tokenizer``, ``max_length``,
    ``prefixes``, ``prepare`` and ``run`` of :class:`~e5onnx.runtime.Embedder`."""

    def tokenize(self, texts, truncate=True):
        """Token ids of each text exactly as :meth:`embed` feeds them (special tokens included).

        Returns:
            list of lists of int, one per text; with ``truncate="windows"``, one list of rows (its windows, or
            its one row) per text.

        Raises:
            InvalidInputError: as :meth:`embed`.
        """
        prepared = self.prepare(texts, truncate=truncate)
        prepared.raise_errors()
        return prepared.rows_of_texts() if truncate == TRUNCATE_WINDOWS else prepared.input_ids

    def pad(self, rows, dtype=np.int64):
        """The graph's inputs for token-id rows (from :meth:`tokenize`), padded to the longest with the pad id.

        Returns:
            ``(input_ids, attention_mask)``, both ``(len(rows), longest)`` of ``dtype`` (attention_mask 1 for
            real tokens, 0 for padding); what calibration and profiling feed a graph.
        """
        return self._tokenizer.pad(rows, dtype)

    def tokens(self, texts, kind=None, add_special_tokens=True):
        """Each text's tokens: id, the characters covered, special or not, character offsets. Nothing is cut: a
        text over :attr:`max_length` shows all its tokens (``len(...) > max_length``).

        Args:
            texts: a ``str`` (one text) or an iterable of ``str``.
            kind: ``"query"`` / ``"passage"`` adds that prefix once, as :meth:`prepare` does; None: as given.
            add_special_tokens: include ``[CLS]`` and ``[SEP]`` (default), as :meth:`embed` feeds the model.

        Returns:
            a list of :class:`TokenizedText`, one per text; with ``add_special_tokens`` their
            :attr:`~TokenizedText.ids` equal :meth:`tokenize`'s for texts within :attr:`max_length`.

        Raises:
            TextError: an item that is not a ``str`` or holds a lone surrogate (index named).
            InvalidInputError: a bad ``texts`` container, ``kind`` or ``add_special_tokens``.
        """
        texts = with_prefix(as_text_list(texts), kind, self.prefixes)
        encodings = self._tokenizer.encodings(texts, flag("add_special_tokens", add_special_tokens))
        return [tokenized(text, enc) for text, enc in zip(texts, encodings)]

    def prepare_ids(self, rows, truncate=True):
        """Token ids made elsewhere, checked, as a :class:`~e5onnx.runtime.prepared.Prepared` for :meth:`run`
        (queued and merged like texts; embedded as given: no prefix, no special token added).

        Args:
            rows: a list of token-id lists, one per text, special tokens included (what :meth:`tokenize` and
                :meth:`tokens` give); each id an int from 0 to :attr:`vocab_size` - 1.
            truncate: a row over :attr:`max_length` keeps its first ``max_length - 1`` ids and its last when that
                is a special token (``[SEP]``), else its first ``max_length`` (:func:`cut_ids`): the ids of a
                long text, cut so, are the ids of the text truncated. False: such a row is refused.

        Returns:
            a Prepared of ``len(rows)`` rows; a refused row (empty, not a list, an id that is not an int or not in
            the vocabulary, or over the max length with ``truncate=False``) gets a
            :class:`~e5onnx.errors.TextError` naming ``rows[i]`` and the id's position in :attr:`Prepared.errors`.

        Raises:
            InvalidInputError: ``rows`` is not a list or tuple, or a bad ``truncate``.
        """
        if not isinstance(rows, (list, tuple)):
            raise InvalidInputError(f"rows must be a list of token-id lists, got {type(rows).__name__}")
        truncate = flag("truncate", truncate)
        tok, limit = self._tokenizer, self.max_length
        ids, errors = [], []
        for i, row in enumerate(rows):
            reason = row_problem(row, tok.vocab_size)
            row = [int(t) for t in row] if reason is None else []
            if len(row) > limit and not truncate:
                reason, row = f"{len(row)} tokens, over max_length {limit}, and truncation is off", []
            if reason:
                errors.append(TextError(i, reason, "rows"))
            ids.append(cut_ids(row, limit, tok.special_ids))
        return Prepared(ids, tuple(errors), None, tok)

    def embed_token_ids(self, rows, batch_size=DEFAULT_BATCH_SIZE, normalize=True):
        """Embed ids tokenised elsewhere (special tokens included, e.g. by the same ``tokenizer.json``): every id
        is checked against the vocabulary first (:meth:`prepare_ids` without truncation, then :meth:`run`).

        Args:
            rows: list of token-id lists, each 1 to :attr:`max_length` ids, each id in the vocabulary.
            batch_size: texts per forward pass, a positive int.
            normalize: L2-normalise (default); False gives the masked mean-pooled ``last_hidden_state``.

        Returns:
            ``(len(rows), dim)`` float32 vectors (unit length when ``normalize``), in input order.

        Raises:
            TextError: a row that is not a non-empty list of ints in the vocabulary or is longer than
                :attr:`max_length` (the message names ``rows[i]``; an InvalidInputError).
            InvalidInputError: ``rows`` is not a list, or a bad ``batch_size`` or ``normalize``.
        """
        prepared = self.prepare_ids(rows, truncate=False)
        prepared.raise_errors()
        return self.run(prepared, flag("normalize", normalize), batch_size)
