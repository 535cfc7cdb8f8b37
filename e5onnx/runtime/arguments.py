"""Checks for the runtime's scalar arguments, raising :class:`~e5onnx.errors.InvalidInputError`."""

import operator

from ..config import OUTPUT_FORMS, TRUNCATE_WINDOWS
from ..errors import InvalidInputError


def whole_number(name, value, minimum=1, maximum=None):
    """Return ``value`` as an ``int`` in ``[minimum, maximum]``.

    Any integral type is accepted (``int``, ``numpy.int64``); ``bool``, floats and strings are not.

    Raises:
        InvalidInputError: naming ``name``, the value and the allowed range.
    """
    if isinstance(value, bool):
        value_ok = None
    else:
        try:
            value_ok = operator.index(value)
        except TypeError:
            value_ok = None
    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    if value_ok is None or value_ok < minimum or (maximum is not None and value_ok > maximum):
        raise InvalidInputError(f"{name} must be a whole number {bounds}, got {value!r}")
    return value_ok


def flag(name, value):
    """Return ``value`` if it is a ``bool`` (``True``/``False``, NumPy bools included).

    Raises:
        InvalidInputError: ``value`` is anything else (``"no"`` would otherwise count as true).
    """
    if type(value).__name__ not in ("bool", "bool_"):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def truncation(value):
    """Return ``value`` if it is a ``truncate`` setting: True (cut), False (refuse) or ``"windows"``.

    Raises:
        InvalidInputError: anything else (``"window"``, ``"yes"``, 1), naming the allowed values.
    """
    if type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    if isinstance(value, str) and value == TRUNCATE_WINDOWS:
        return TRUNCATE_WINDOWS
    raise InvalidInputError(f"truncate must be True, False or {TRUNCATE_WINDOWS!r}, got {value!r}")


def output_form(value):
    """Return ``value`` if it is an output vector form (:data:`~e5onnx.config.OUTPUT_FORMS`).

    Raises:
        InvalidInputError: anything else, naming the allowed forms.
    """
    if not isinstance(value, str) or value not in OUTPUT_FORMS:
        raise InvalidInputError(f"output must be one of {', '.join(OUTPUT_FORMS)}, got {value!r}")
    return value
