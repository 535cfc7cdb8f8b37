"""The inputs of a request body: texts, or token-id arrays (OpenAI's ``input`` and TEI's ``inputs`` accept both).

Accepted forms: a string; an array of strings; an array of integers (one token-id array); an array of arrays of
integers. Token ids are the model's input as given, special tokens included (what ``POST /tokenize`` returns);
their range and length are checked by :meth:`~e5onnx.runtime.Embedder.prepare_ids`, which names the index. One
request holds texts or token-id arrays, not both.
"""

from .errors import HTTPError


def json_kind(value):
    """The JSON type name of a parsed value (``"object"``, ``"array"``, ``"string"``, ``"number"``, ...)."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_int(value):
    return type(value) is int  # JSON integers; true/false are bool, 1.0 is float


def parse_inputs(value, field, limit, token_ids=True):
    """``(items, is_ids)``: the texts (list of str) or token-id arrays (list of lists) of ``value``.

    Args:
        field: the body field (``"input"``, ``"inputs"``), named in errors.
        limit: most items (``--max-client-batch-size``).
        token_ids: whether token-id arrays are accepted (``POST /tokenize`` takes text only).

    Raises:
        HTTPError: 400: not one of the accepted forms, an empty array or token-id array, more than ``limit``
            items, an empty or whitespace-only string, a lone surrogate, strings mixed with token ids (the
            index is named).
    """
    if isinstance(value, str):
        value = [value]
    elif not isinstance(value, list):
        raise HTTPError(f"'{field}' must be {_forms(token_ids)}; got a JSON {json_kind(value)}", param=field)
    if not value:
        raise HTTPError(f"'{field}' is an empty array: send at least one text", param=field)
    if token_ids and _is_int(value[0]):  # one token-id array
        for position, t in enumerate(value):
            if not _is_int(t):
                raise HTTPError(f"'{field}' is an array of token ids but item {position} is a JSON {json_kind(t)}: "
                                "a token-id array holds integers only", param=field)
        return [value], True
    _limited(value, field, limit)
    if token_ids and isinstance(value[0], list):
        _token_arrays(value, field)
        return value, True
    for i, text in enumerate(value):  # inline: this loop runs for every text of every request
        if type(text) is not str or not text.strip():
            _refuse_text(text, i, field, token_ids)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HTTPError(f"{field}[{i}] holds a lone surrogate (\\u{ord(text[exc.start]):04x}) at character "
                            f"{exc.start}: not valid Unicode text", param=field) from None
    return value, False


def _forms(token_ids):
    return "a string or an array of strings" + (", or token ids: an array of integers or an array of arrays of "
                                                "integers" if token_ids else "")


def _limited(items, field, limit):
    if len(items) > limit:
        raise HTTPError(f"'{field}' has {len(items)} texts, over the limit of {limit} per request "
                        "(--max-client-batch-size)", param=field)


def _token_arrays(rows, field):
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            mixed = "; one request holds texts or token-id arrays, not both" if isinstance(row, str) else ""
            raise HTTPError(f"{field}[{i}] must be an array of token ids like {field}[0], got a JSON "
                            f"{json_kind(row)}{mixed}", param=field)
        for position, t in enumerate(row):
            if not _is_int(t):
                raise HTTPError(f"{field}[{i}]: token id at position {position} must be an integer, got a JSON "
                                f"{json_kind(t)}", param=field)


def _refuse_text(text, i, field, token_ids):
    """Raise the 400 of ``field[i]``, which is not a non-blank string."""
    name = f"{field}[{i}]"
    if isinstance(text, (int, list)) and not isinstance(text, bool):
        if not token_ids:
            raise HTTPError(f"{name}: token ids are not accepted here; send the text", param=field)
        raise HTTPError(f"{name} is a JSON {json_kind(text)} but {field}[0] is a string: one request holds texts "
                        "or token-id arrays, not both", param=field)
    if not isinstance(text, str):
        raise HTTPError(f"{name} must be a string, got a JSON {json_kind(text)}; '{field}' must be "
                        f"{_forms(token_ids)}", param=field)
    raise HTTPError(f"{name} is an empty or whitespace-only string", param=field)
