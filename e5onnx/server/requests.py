"""Parsing and validation of the two request bodies the server accepts, into one :class:`EmbedRequest`.

- OpenAI ``POST /v1/embeddings``: ``input`` (string or non-empty list of strings), ``model``,
  ``encoding_format`` (:data:`ENCODING_FORMATS`), ``dimensions`` (only the model's width), ``user`` (ignored);
  extensions ``input_type`` (``query`` | ``passage``: the e5 prefix is added once) and ``truncate`` (true, false
  or ``"windows"``).
- text-embeddings-inference ``POST /embed``: ``inputs``, ``normalize``, ``truncate`` (true, false or
  ``"windows"``), ``truncation_direction`` (``right`` only), ``prompt_name`` (``query`` | ``passage``),
  ``dimensions``; extension ``encoding_format`` as on the OpenAI route.

``encoding_format`` names the vector form and how it travels, in one field: ``float`` (JSON numbers) and
``base64`` (little-endian float32 bytes) are OpenAI's; ``int8``, ``uint8``, ``binary``, ``ubinary`` are the compact
forms (:mod:`e5onnx.runtime.vectors`) as JSON lists of integers, and ``int8_base64`` ... ``ubinary_base64`` the same
bytes in base64. One field, not a second one beside OpenAI's: the openai Python client, when its caller gives no
``encoding_format``, sends ``base64`` and decodes the answer as float32 itself, so a compact form chosen in
another field would come back as garbage floats; a compact ``encoding_format`` is only ever sent on purpose, and
the client then returns the answer untouched.

Every refusal is an :class:`~e5onnx.server.errors.HTTPError` (400) naming the field (``param``) and, for a text,
its index. Decisions (documented in README "Serving"): an empty or whitespace-only string is refused (OpenAI and TEI
refuse it too; the Python API embeds it as ``[CLS] [SEP]``); unknown fields are refused (a typo such as
``encoding-format`` must not be ignored silently), and so is a field given twice in one object (JSON leaves it
undefined; Python's parser keeps the last). Both embedding routes also take token-id arrays (:mod:`.inputs`),
embedded as given: no prefix is added to them, so ``input_type`` / ``prompt_name`` is refused with them, and so
is ``truncate: "windows"`` (windows are cut from a text's own tokens, each with its prefix).

- text-embeddings-inference ``POST /tokenize``: ``inputs`` (string or array of strings), ``add_special_tokens``
  (default true), ``prompt_name``; extension ``offset_units`` (``bytes``, TEI's, default | ``chars``).
"""

import json
import sys
from dataclasses import dataclass

from ..config import OUTPUT_FORMS, TRUNCATE_WINDOWS
from .errors import HTTPError
from .inputs import json_kind as _kind
from .inputs import parse_inputs

OPENAI_FIELDS = ("input", "model", "encoding_format", "dimensions", "user", "input_type", "truncate")
TEI_FIELDS = ("inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions",
              "encoding_format")
TOKENIZE_FIELDS = ("inputs", "add_special_tokens", "prompt_name", "offset_units")
PROMPTS = ("query", "passage")
OFFSET_UNITS = ("bytes", "chars")
#: What ``encoding_format`` accepts on both routes (see the module docstring).
ENCODING_FORMATS = ("float", "base64", *(f for f in OUTPUT_FORMS if f != "float"),
                    *(f"{f}_base64" for f in OUTPUT_FORMS if f != "float"))


@dataclass
class EmbedRequest:
    """A validated embedding request.

    Attributes:
        texts: the texts as given (prefix not yet added), at least one; token-id arrays when :attr:`token_ids`.
        prompt: ``"query"``, ``"passage"`` or None (texts used as given).
        truncate: True (cut texts over the model's max length), False (refuse them) or ``"windows"``.
        normalize: L2-normalise the vectors (OpenAI route: always).
        encoding_format: one of :data:`ENCODING_FORMATS`.
        model: the ``model`` field as sent (OpenAI route), or None.
        token_ids: :attr:`texts` holds token-id arrays (lists of int, special tokens included), not strings.
    """

    texts: list
    prompt: str = None
    truncate: object = False
    normalize: bool = True
    encoding_format: str = "float"
    model: str = None
    token_ids: bool = False

    @property
    def output(self):
        """The vector form: ``"float"``, ``"int8"``, ``"uint8"``, ``"binary"`` or ``"ubinary"``."""
        form = self.encoding_format.removesuffix("_base64")
        return "float" if form == "base64" else form

    @property
    def base64(self):
        """True when the vectors travel as base64 of their bytes (float: little-endian float32)."""
        return self.encoding_format.endswith("base64")


@dataclass
class TokenizeRequest:
    """A validated ``POST /tokenize`` request.

    Attributes:
        texts: the texts as given, at least one.
        prompt: ``"query"``, ``"passage"`` (its prefix is added once, and tokenised with the text) or None.
        add_special_tokens: include ``[CLS]`` and ``[SEP]``.
        offset_units: ``"bytes"`` (UTF-8 byte offsets, as text-embeddings-inference) or ``"chars"`` (Unicode
            code points, Python string indices, Hugging Face's ``offset_mapping``).
    """

    texts: list
    prompt: str = None
    add_special_tokens: bool = True
    offset_units: str = "bytes"


def parse_json(body):
    """The JSON object in ``body`` (bytes).

    Raises:
        HTTPError: 400: the body is empty, not UTF-8 (the byte offset is given), not JSON (line and column), not
            a JSON object, or an object in it has a key twice (the key is named).
    """
    if not body.strip():
        raise HTTPError("the request body is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise HTTPError(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise HTTPError("the request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer over Python's conversion limit (sys.get_int_max_str_digits())
        reason = (f"an integer of over {sys.get_int_max_str_digits():,} digits" if "digits" in str(exc)
                  else str(exc)[:200])
        raise HTTPError(f"the request body is not usable JSON: {reason}") from None
    if not isinstance(obj, dict):
        raise HTTPError(f"the request body must be a JSON object, got a JSON {_kind(obj)}")
    return obj


def _unique_keys(pairs):
    """A JSON object's ``(key, value)`` pairs as a dict, refusing a key given twice."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            shown = _shown(key)
            raise HTTPError(f"field '{shown}' is given twice in one JSON object: send each field once", param=shown)
        obj[key] = value
    return obj


def _shown(key):
    """``key`` safe to quote: at most 64 characters, ASCII (a key may hold lone surrogates or control characters,
    which must not reach the response raw)."""
    return (key if len(key) <= 64 else key[:64] + "...").encode("ascii", "backslashreplace").decode("ascii")


def _unknown(obj, allowed):
    for key in obj:
        if key not in allowed:
            shown = _shown(key)
            raise HTTPError(f"unknown field '{shown}'; accepted fields: {', '.join(allowed)}", param=shown)


def _body_texts(obj, allowed, field, max_texts, token_ids=True):
    """``(texts, is_ids)`` of ``obj[field]`` (:func:`~e5onnx.server.inputs.parse_inputs`) after refusing unknown
    fields and a missing ``field``."""
    _unknown(obj, allowed)
    if field not in obj:
        raise HTTPError(f"'{field}' is required", param=field)
    return parse_inputs(obj[field], field, max_texts, token_ids)


def _prompt(obj, field, token_ids):
    """The ``input_type`` / ``prompt_name`` of an embedding request; refused with token ids (embedded as given)."""
    prompt = _choice(obj, field, PROMPTS)
    if prompt is not None and token_ids:
        raise HTTPError(f"'{field}' cannot be used with token ids, which are embedded as given: send text, or the "
                        "ids of the prefixed text (POST /tokenize with prompt_name)", param=field)
    return prompt


def _choice(obj, field, allowed, default=None):
    value = obj.get(field)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in allowed:
        shown = repr(value) if isinstance(value, str) and len(value) <= 32 else f"a JSON {_kind(value)}"
        raise HTTPError(f"'{field}' must be one of {', '.join(allowed)}, got {shown}", param=field)
    return value.lower()


def _bool(obj, field, default):
    value = obj.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HTTPError(f"'{field}' must be true or false, got a JSON {_kind(value)}", param=field)
    return value


def _truncate(obj, token_ids):
    value = obj.get("truncate")
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() == TRUNCATE_WINDOWS:
        if token_ids:
            raise HTTPError(f"'truncate' \"{TRUNCATE_WINDOWS}\" cannot be used with token ids: windows are cut from a "
                            "text's own tokens, with its prefix in each; send the text", param="truncate")
        return TRUNCATE_WINDOWS
    shown = repr(value) if isinstance(value, str) and len(value) <= 32 else f"a JSON {_kind(value)}"
    raise HTTPError(f"'truncate' must be true, false or \"{TRUNCATE_WINDOWS}\", got {shown}", param="truncate")


def _dimensions(obj, dim):
    value = obj.get("dimensions")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPError(f"'dimensions' must be an integer, got a JSON {_kind(value)}", param="dimensions")
    if value != dim:
        raise HTTPError(f"'dimensions' must be {dim} for this model (it does not support shortened vectors), "
                           f"got {value}", param="dimensions")


def parse_openai(obj, dim, max_texts):
    """An :class:`EmbedRequest` from an OpenAI embeddings body (see the module docstring).

    Raises:
        HTTPError: 400: a missing ``input``, an unknown field, a wrong type or value (the field is named).
    """
    texts, token_ids = _body_texts(obj, OPENAI_FIELDS, "input", max_texts)
    for field in ("model", "user"):
        if obj.get(field) is not None and not isinstance(obj[field], str):
            raise HTTPError(f"'{field}' must be a string, got a JSON {_kind(obj[field])}", param=field)
    _dimensions(obj, dim)
    return EmbedRequest(texts=texts, prompt=_prompt(obj, "input_type", token_ids),
                        truncate=_truncate(obj, token_ids),
                        encoding_format=_choice(obj, "encoding_format", ENCODING_FORMATS, "float"),
                        model=obj.get("model"), token_ids=token_ids)


def parse_tei(obj, dim, max_texts):
    """An :class:`EmbedRequest` from a text-embeddings-inference ``/embed`` body (see the module docstring).

    Raises:
        HTTPError: 400: a missing ``inputs``, an unknown field, a wrong type or value (the field is named).
    """
    texts, token_ids = _body_texts(obj, TEI_FIELDS, "inputs", max_texts)
    if _choice(obj, "truncation_direction", ("right", "left"), "right") == "left":
        raise HTTPError("'truncation_direction' left is not supported: e5 keeps the start of a text",
                        param="truncation_direction")
    _dimensions(obj, dim)
    req = EmbedRequest(texts=texts, prompt=_prompt(obj, "prompt_name", token_ids),
                       truncate=_truncate(obj, token_ids), normalize=_bool(obj, "normalize", True),
                       encoding_format=_choice(obj, "encoding_format", ENCODING_FORMATS, "float"),
                       token_ids=token_ids)
    if not req.normalize and req.output in ("int8", "uint8"):
        raise HTTPError(f"'encoding_format' {req.encoding_format} needs normalize true: its ranges were calibrated "
                        "on unit vectors", param="encoding_format")
    return req


def parse_tokenize(obj, max_texts):
    """A :class:`TokenizeRequest` from a text-embeddings-inference ``/tokenize`` body (see the module docstring).

    Raises:
        HTTPError: 400: a missing ``inputs``, token ids, an unknown field, a wrong type or value (the field is
            named).
    """
    texts, _ = _body_texts(obj, TOKENIZE_FIELDS, "inputs", max_texts, token_ids=False)
    return TokenizeRequest(texts=texts, prompt=_choice(obj, "prompt_name", PROMPTS),
                           add_special_tokens=_bool(obj, "add_special_tokens", True),
                           offset_units=_choice(obj, "offset_units", OFFSET_UNITS, "bytes"))
