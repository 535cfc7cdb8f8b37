"""Texts tokenised for one embedding request: what :meth:`Embedder.prepare` makes and :meth:`Embedder.run` embeds.

Splitting a request in two lets a caller look at it between the steps — count its tokens, refuse a text by
index, queue it with other requests (the server's dynamic batching) — without reaching into the tokenizer or
re-checking ids in Python: a :class:`Prepared` is only made by the Embedder whose tokenizer produced its ids.
"""

from dataclasses import dataclass, field

import numpy as np

from ..config import TRUNCATE_WINDOWS, WINDOW_MAX_TOKENS
from ..errors import InvalidInputError, TextError
from . import windows
from .texts import add_prefix, text_problem

#: What :meth:`Embedder.prepare` accepts as ``kind``: the prefix it adds (None: texts as given).
KINDS = (None, "query", "passage")


@dataclass(frozen=True, eq=False)
class Prepared:
    """``n`` texts tokenised by one :class:`~e5onnx.runtime.Embedder`, ready for its :meth:`run`.

    Attributes:
        input_ids: the rows the graph gets (lists of int, ``[CLS] ... [SEP]`` or the model's own specials such as
            XLM-RoBERTa's ``<s> ... </s>``, at most the Embedder's ``max_length``): one per text, or, when
            :attr:`windows` is set, each text's windows one after the other; an empty list for a text in
            :attr:`errors`.
        errors: one :class:`~e5onnx.errors.TextError` per refused text (not a ``str``, a lone surrogate, over
            the max length with ``truncate=False``, over :data:`~e5onnx.config.WINDOW_MAX_TOKENS` with
            ``truncate="windows"``), in index order; :meth:`Embedder.run` refuses a Prepared that has any
            (:meth:`raise_errors`).
        kind: ``"query"``, ``"passage"`` (the prefix that was added once) or None.
        windows: None (one row per text), or a tuple of the rows of each text (>= 1; ``truncate="windows"``
            split a text over max length, :mod:`~e5onnx.runtime.windows`).
    """

    input_ids: list
    errors: tuple = ()
    kind: str = None
    owner: object = field(default=None, repr=False)  # the tokenizer that made the ids (see Embedder.run)
    windows: tuple = None

    def __len__(self):
        """Number of texts (one vector each), whatever the number of rows."""
        return len(self.input_ids) if self.windows is None else len(self.windows)

    @property
    def row_counts(self):
        """``(rows,)`` int64: tokens of each row of :attr:`input_ids`."""
        return np.fromiter((len(r) for r in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @property
    def token_counts(self):
        """``(n,)`` int64: tokens per text, special tokens included, every window's (0 for a refused text)."""
        rows = self.row_counts
        if self.windows is None or not len(rows):
            return rows
        return np.add.reduceat(rows, np.concatenate(([0], np.cumsum(self.windows)[:-1])))

    @property
    def tokens(self):
        """Total tokens of the texts (int), special tokens included, every window's: what OpenAI's ``usage``
        reports."""
        return sum(len(r) for r in self.input_ids)

    def rows_of_texts(self):
        """Each text's rows: a list (one per text) of lists of token-id lists."""
        counts = self.windows or (1,) * len(self.input_ids)
        out, start = [], 0
        for count in counts:
            out.append(self.input_ids[start:start + count])
            start += count
        return out

    def raise_errors(self):
        """Raise the first of :attr:`errors` (a :class:`~e5onnx.errors.TextError` naming the index); no-op if none."""
        if self.errors:
            raise self.errors[0]


def parts_of(prepared, normalize):
    """``(parts, flags)``: ``prepared`` (one :class:`Prepared` or a sequence) as a list, and one normalise flag
    per part (``normalize`` a bool, or a sequence of bools as long as the parts).

    Raises:
        InvalidInputError: an item is not a Prepared, or the flags do not match the parts.
    """
    parts = [prepared] if isinstance(prepared, Prepared) else list(prepared)
    for i, part in enumerate(parts):
        if not isinstance(part, Prepared):
            raise InvalidInputError(f"prepared[{i}] must be a Prepared from Embedder.prepare, got {type(part).__name__}")
    flags = [normalize] * len(parts) if type(normalize).__name__ in ("bool", "bool_") else list(normalize)
    if len(flags) != len(parts) or not all(type(f).__name__ in ("bool", "bool_") for f in flags):
        raise InvalidInputError(f"normalize must be True, False or one bool per Prepared ({len(parts)}), "
                                f"got {normalize!r}")
    return parts, [bool(f) for f in flags]


def with_prefix(texts, kind, prefixes):
    """``texts`` (list of str) with ``prefixes[kind]`` added once (:func:`~e5onnx.runtime.texts.add_prefix`), or
    as given for ``kind`` None.

    Raises:
        InvalidInputError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be 'query', 'passage' or None, got {kind!r}")
    return texts if kind is None else add_prefix(texts, prefixes[kind])


def prepare_texts(tokenizer, texts, kind, truncate, prefixes, first_index=0, checked=False):
    """What :meth:`Embedder.prepare <e5onnx.runtime.Embedder.prepare>` does, on a list of texts.

    Args:
        tokenizer: the Embedder's :class:`~e5onnx.runtime.tokenizer.TextTokenizer`.
        texts: list of items (checked here unless ``checked``: every item is already a valid ``str``).
        kind: ``"query"``, ``"passage"`` or None; the prefix of ``prefixes[kind]`` is added once.
        truncate: True, False or ``"windows"`` (already validated).
        prefixes: ``{"query": ..., "passage": ...}``; with windows, a text starting with one repeats it in
            every window.
        first_index: the caller's index of ``texts[0]``, for errors.

    Raises:
        InvalidInputError: a bad ``kind``.
    """
    errors, good = [], list(range(len(texts)))
    if not checked:
        problems = [(i, text_problem(t)) for i, t in enumerate(texts)]
        errors = [TextError(first_index + i, reason) for i, reason in problems if reason]
        good = [i for i, reason in problems if not reason]
    chosen = with_prefix([texts[i] for i in good], kind, prefixes)
    encoded = tokenizer.encode(chosen, truncate is True)
    if truncate == TRUNCATE_WINDOWS:
        return _windowed(tokenizer, len(texts), good, encoded, errors, kind, prefixes, first_index)
    ids = [[] for _ in texts]
    for i, row in zip(good, encoded):
        if len(row) > tokenizer.max_length:  # only when truncate is off
            errors.append(TextError(first_index + i, f"{len(row)} tokens, over max_length {tokenizer.max_length}, "
                                                     "and truncation is off"))
        else:
            ids[i] = row
    errors.sort(key=lambda e: e.index)
    return Prepared(ids, tuple(errors), kind, tokenizer)


def _windowed(tokenizer, n, good, encoded, errors, kind, prefixes, first_index):
    """The Prepared of ``truncate="windows"``: each good text's untruncated ids split by :func:`windows.split`."""
    head, tail = tokenizer.framing_ids
    order = [kind] + [k for k in prefixes if k != kind] if kind else list(prefixes)
    candidates = [tokenizer.plain_ids(prefixes[k].strip()) for k in order]
    rows = [[[]] for _ in range(n)]
    for i, ids in zip(good, encoded):
        if len(ids) > WINDOW_MAX_TOKENS:
            errors.append(TextError(first_index + i, f"{len(ids)} tokens, over the {WINDOW_MAX_TOKENS} a text may have "
                                                     "with truncate='windows' (WINDOW_MAX_TOKENS); split the text"))
            continue
        split = windows.split(ids, head, tail, candidates, tokenizer.max_length)
        if split is None:
            errors.append(TextError(first_index + i, f"{len(ids)} tokens, over max_length {tokenizer.max_length}, "
                                                     "which leaves no room for text in a window"))
        else:
            rows[i] = split
    errors.sort(key=lambda e: e.index)
    counts = tuple(len(r) for r in rows)
    flat = [row for text_rows in rows for row in text_rows]
    return Prepared(flat, tuple(errors), kind, tokenizer, counts if any(c > 1 for c in counts) else None)
