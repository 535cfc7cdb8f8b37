"""Texts from a file, for the command line (``e5onnx embed --input``, ``e5onnx export --calibration``).

Two formats, both UTF-8:

- plain text: one text per line; every line is a text, empty ones included (an empty line embeds as
  ``[CLS] [SEP]``);
- JSON lines (a ``.jsonl`` name, or ``jsonl=True``): one JSON string, or one object with a ``"text"`` string,
  per line; blank lines (empty or whitespace only) are skipped, so a trailing blank line is no error. An object
  with a duplicate key is refused (JSON leaves its meaning open; Python's ``json`` would keep the last).

Not part of the runtime: the runtime takes lists of ``str`` (:mod:`e5onnx.runtime.texts`).
"""

import json
import sys
from pathlib import Path

from .errors import InvalidInputError

_TEXT_KEY = "text"


class DuplicateKeyError(ValueError):
    """A JSON object holds ``key`` twice (raised by :func:`unique_keys`; JSON leaves that undefined)."""

    def __init__(self, key):
        super().__init__(key)
        self.key = key


def read_texts(path, jsonl=False, label="--input"):
    """The texts of a file (see the module doc for the two formats); ``"-"`` reads standard input.

    Returns:
        list of str.

    Raises:
        InvalidInputError: as :func:`read_numbered_texts`.
    """
    return read_numbered_texts(path, jsonl, label)[0]


def read_numbered_texts(path, jsonl=False, label="--input"):
    """``(texts, line_numbers)``: the texts of a file and the 1-based line each came from (JSON lines skip blank
    lines, so text ``i`` is not always line ``i + 1``). ``"-"`` reads standard input.

    A UTF-8 byte-order mark and a final newline are not part of any text; ``\\r\\n`` endings are accepted.
    JSON lines are used when ``jsonl`` is true or the file name ends in ``.jsonl`` (any case).

    Returns:
        ``(list of str, list of int)``, the same length.

    Raises:
        InvalidInputError: the file cannot be read, or a line is not UTF-8, not JSON, a JSON object with a
            duplicate key, or neither a JSON string nor an object with a ``"text"`` string (the message names
            ``label`` or the file, the line number and what the line holds instead).
    """
    data, name = _read_bytes(path, label)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is not part of the first text
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final newline ends the last line; it does not start an empty text
    as_json = jsonl or name.lower().endswith(".jsonl")
    texts, numbers = [], []
    for n, raw in enumerate(lines, start=1):
        try:
            line = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{name} line {n}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if as_json and not line.strip():
            continue  # a blank line between (or after) JSON lines holds no text
        texts.append(_json_text(line, name, n) if as_json else line)
        numbers.append(n)
    return texts, numbers


def _read_bytes(path, label):
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        return Path(path).read_bytes(), str(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {label} {str(path)!r}: {exc.strerror}") from None


def unique_keys(pairs):
    """``object_pairs_hook`` of :func:`json.loads`: a dict, refusing a key given twice."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(key)
        obj[key] = value
    return obj


def _json_text(line, name, n):
    """The text of one JSON line: a JSON string, or an object's ``"text"`` string."""
    try:
        item = json.loads(line, object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        raise InvalidInputError(f"{name} line {n}: a JSON object has the key {exc.key!r} twice") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{name} line {n}: not JSON ({exc.msg})") from None
    text = item.get(_TEXT_KEY) if isinstance(item, dict) else item
    if isinstance(text, str):
        return text
    if not isinstance(item, dict):
        found = f"got a JSON {_json_kind(item)}"
    elif _TEXT_KEY in item:
        found = f"its {_TEXT_KEY!r} is a JSON {_json_kind(text)}"
    else:
        found = ("the object has keys " + ", ".join(repr(k) for k in sorted(item))) if item else "the object is empty"
    raise InvalidInputError(f"{name} line {n}: expected a JSON string or an object with a {_TEXT_KEY!r} string; "
                            f"{found}")


def _json_kind(value):
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {int: "number", float: "number", list: "array", dict: "object"}.get(type(value), type(value).__name__)
