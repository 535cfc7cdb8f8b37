"""The package's one exception hierarchy.

Every error e5onnx raises on purpose derives from :class:`E5OnnxError`, so callers can catch one type.
Input errors (:class:`InvalidInputError`) also derive from :class:`ValueError`, whatever the cause.
"""


class E5OnnxError(Exception):
    """Base class of every error raised by e5onnx."""


class InvalidInputError(E5OnnxError, ValueError):
    """A text or argument passed to the runtime is unusable.

    The message names the offending input: its index in the list, its type or length, and the reason.
    ``index`` is that position (0-based) when the error is about one text, else ``None``.
    """

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index


class TextError(InvalidInputError):
    """One text of a list is unusable: ``texts[index]`` (not a ``str``, a lone surrogate, or over the max length
    with truncation off).

    Attributes:
        index: the text's position (0-based) in the caller's list.
        reason: what is wrong, without the position (``"expected str, got NoneType"``), so that a caller can name
            the text its own way (the server says ``input[3]``): :meth:`named`.
    """

    def __init__(self, index, reason, field="texts"):
        super().__init__(f"{field}[{index}]: {reason}", index)
        self.reason = reason

    def named(self, field):
        """The same error with the text called ``field[index]`` (e.g. ``input[3]: ...``)."""
        return TextError(self.index, self.reason, field)


class ModelFolderError(E5OnnxError):
    """A model folder (or Hub repository) is missing, incomplete or not an e5onnx model folder."""


class IntegrityError(ModelFolderError):
    """A model file's sha256 differs from the one recorded in ``manifest.json``."""


class BackendUnavailableError(E5OnnxError):
    """A variant needs an optional backend (OpenVINO for ``bf16``) that is not installed."""


class ExportError(E5OnnxError):
    """The export could not be completed; nothing was written to the output folder."""


class ParityError(ExportError):
    """An exported variant's embeddings differ from the PyTorch reference by more than its tolerance."""

    def __init__(self, message, report=None):
        super().__init__(message)
        #: The full parity report (dict per variant), as recorded in a manifest.
        self.report = report
