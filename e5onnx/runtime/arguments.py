"""Checks for the runtime's scalar arguments, raising :class:`~e5onnx.errors.InvalidInputError`."""

import operator

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
