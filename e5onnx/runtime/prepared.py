"""Texts tokenised for one embedding request: what :meth:`Embedder.prepare` makes and :meth:`Embedder.run` embeds.

Splitting a request in two lets a caller look at it between the steps — count its tokens, refuse a text by
index, queue it with other requests (the server's dynamic batching) — without reaching into the tokenizer or
re-checking ids in Python: a :class:`Prepared` is only made by the Embedder whose tokenizer produced its ids.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError

#: What :meth:`Embedder.prepare` accepts as ``kind``: the prefix it adds (None: texts as given).
KINDS = (None, "query", "passage")


@dataclass(frozen=True, eq=False)
class Prepared:
    """``n`` texts tokenised by one :class:`~e5onnx.runtime.Embedder`, ready for its :meth:`run`.

    Attributes:
        input_ids: ``n`` lists of int, the ids of each text as the graph gets them (``[CLS] ... [SEP]``, or the
            model's own specials such as XLM-RoBERTa's ``<s> ... </s>``, at
            most the Embedder's ``max_length``); an empty list for a text in :attr:`errors`.
        errors: one :class:`~e5onnx.errors.TextError` per refused text (not a ``str``, a lone surrogate, over
            the max length with ``truncate=False``), in index order; :meth:`Embedder.run` refuses a Prepared
            that has any (:meth:`raise_errors`).
        kind: ``"query"``, ``"passage"`` (the prefix that was added once) or None.
    """

    input_ids: list
    errors: tuple = ()
    kind: str = None
    owner: object = field(default=None, repr=False)  # the tokenizer that made the ids (see Embedder.run)

    def __len__(self):
        return len(self.input_ids)

    @property
    def token_counts(self):
        """``(n,)`` int64: tokens per text, special tokens included (0 for a refused text)."""
        return np.fromiter((len(r) for r in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @property
    def tokens(self):
        """Total tokens of the texts (int), special tokens included: what OpenAI's ``usage`` reports."""
        return sum(len(r) for r in self.input_ids)

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
