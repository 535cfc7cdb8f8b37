"""Validation and e5 prefixing of input texts, before any tokenisation.

Accepted input: a single ``str`` (one text) or an iterable of ``str``. Everything else is refused with an
:class:`~e5onnx.errors.InvalidInputError` that names the offending index and the reason.
"""

import unicodedata
from collections.abc import Mapping, Set

from ..errors import InvalidInputError, TextError


def as_text_list(texts):
    """Return ``texts`` as a list of valid ``str``.

    Args:
        texts: a ``str`` (treated as one text) or an ordered iterable (list, tuple, generator, 1-D NumPy
            array, pandas Series) of ``str``.

    Raises:
        InvalidInputError: the container is unusable (see :func:`as_list`).
        TextError: the first item that is not a ``str`` (``None``, ``bytes``, numbers, ...) or holds a lone
            surrogate (not encodable as UTF-8); the message names the item's index.
    """
    texts = as_list(texts)
    for i, text in enumerate(texts):
        reason = text_problem(text)
        if reason:
            raise TextError(i, reason)
    return texts


def as_list(texts):
    """``texts`` as a list, its items not yet checked (see :func:`text_problem`).

    Raises:
        InvalidInputError: ``texts`` is ``None``, ``bytes``, not iterable, a mapping (dict: its keys would
            be embedded), a set (no order), or a table (pandas DataFrame: its column names would be embedded).
    """
    if isinstance(texts, str):
        return [texts]
    if texts is None or isinstance(texts, (bytes, bytearray, memoryview)):
        raise InvalidInputError(
            f"texts must be a str or a list of str, got {type(texts).__name__}"
            + ("; decode bytes to str first" if texts is not None else "")
        )
    if isinstance(texts, (Mapping, Set)) or hasattr(texts, "columns"):
        hint = {"DataFrame": "; pass one column, e.g. df['text']"}.get(type(texts).__name__, "")
        raise InvalidInputError(
            f"texts must be a str or an ordered list of str, got {type(texts).__name__} "
            f"(a mapping, set or table would be embedded by its keys or in no fixed order){hint}"
        )
    try:
        return list(texts)
    except TypeError:
        raise InvalidInputError(f"texts must be a str or a list of str, got {type(texts).__name__}") from None


def text_problem(text):
    """Why ``text`` cannot be embedded (``"expected str, got NoneType"``, a lone surrogate), or ``None``."""
    if not isinstance(text, str):
        hint = "; decode bytes to str first" if isinstance(text, (bytes, bytearray)) else ""
        return f"expected str, got {type(text).__name__}{hint}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate {text[exc.start]!r} at character {exc.start} is not valid Unicode text"
    return None


def has_prefix(text, prefix):
    """True when ``text`` already starts with ``prefix`` as the uncased e5 tokenizer sees it.

    The rule: leading whitespace and invisible format/control characters (a byte-order mark, U+200B) are
    ignored, case is ignored, and the space after the colon is optional,
    because BERT's uncased tokenizer gives ``"query: x"``, ``"Query: x"``, ``"  QUERY:x"`` the very same
    tokens. Any other start (``"query x"``, ``"passage: x"`` when asking for queries) gets the prefix.
    """
    head = prefix.rstrip()
    start = 0
    while start < len(text) and (text[start].isspace() or unicodedata.category(text[start]) in ("Cc", "Cf")):
        start += 1  # BERT's normaliser drops these (a byte-order mark, zero-width space, control chars)
    return text[start:start + len(head)].casefold() == head.casefold()


def add_prefix(texts, prefix):
    """Prefix every text with ``prefix`` exactly once (see :func:`has_prefix` for the rule)."""
    return [t if has_prefix(t, prefix) else prefix + t for t in texts]

