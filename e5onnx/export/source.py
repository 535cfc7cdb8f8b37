"""Find the Hugging Face model to export: a local folder, or a Hub id fetched with huggingface-hub."""

import json
import logging
from pathlib import Path

from ..errors import ExportError, ModelFolderError
from ..runtime.folder import is_local, local_folder, looks_like_path
from ..runtime.manifest import describe_files

#: Files of a Hub repo the export needs: config, tokenizer (SentencePiece ``*.model`` too, to convert a repo without
#: ``tokenizer.json``), sentence-transformers' module configs and the PyTorch weights.
SOURCE_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model.bin"]
#: Weight files whose sha256 is recorded as the source's fingerprint.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

log = logging.getLogger("e5onnx.export")


class _HubUnavailable(ExportError):
    """A Hub id that neither the Hub (offline, unreachable) nor the HF cache could give."""


def resolve_source(model, revision=None, fallback=None):
    """Return ``(local_folder, info)`` for a local Hugging Face folder or a Hub model id.

    Hub ids are downloaded with ``huggingface_hub.snapshot_download`` (the HF cache is honoured and
    ``HF_HUB_OFFLINE=1`` works from it); ``info`` records ``id``, the resolved ``revision`` (commit),
    the local ``path`` and the sha256 of the weight files.

    Args:
        model: Hub id or local folder.
        revision: Hub branch, tag or commit of ``model`` (Hub ids only).
        fallback: Hub id or local folder resolved instead (without ``revision``) when ``model`` is a Hub id
            that cannot be had: the Hub is unreachable or offline (``HF_HUB_OFFLINE=1``) and the HF cache does
            not hold it. Logged as a warning (stderr from the CLI); ``info`` then describes the fallback. A
            repo the Hub says does not exist, or a revision it lacks, is still an error.

    Raises:
        ExportError: the folder has no ``config.json`` or weights, the download failed, ``fallback`` is given
            with a local ``model``, or neither ``model`` nor ``fallback`` could be had (the message names both).
    """
    if fallback is None:
        return _resolve(model, revision)
    if is_local(model):
        raise ExportError(f"--fallback applies to Hub ids, but {str(model)!r} is a local folder")
    try:
        return _resolve(model, revision)
    except _HubUnavailable as exc:
        try:
            resolved = _resolve(fallback)
        except ExportError as fallback_exc:
            raise ExportError(f"{exc}\nand the fallback {str(fallback)!r} could not be had either: {fallback_exc}") \
                from fallback_exc
        log.warning("%s\nexporting the fallback %s instead", exc, fallback)
        return resolved


def _resolve(model, revision=None):
    if is_local(model):
        if revision is not None:
            raise ExportError(f"--revision applies to Hub ids, but {str(model)!r} is a local folder")
        try:
            folder = local_folder(model)
        except ModelFolderError as exc:
            raise ExportError(str(exc)) from exc
        info = {"id": str(model), "revision": None, "path": str(folder)}
    elif looks_like_path(model):
        raise ExportError(f"no such source folder {str(model)!r}")
    else:
        folder = _download(model, revision)
        info = {"id": str(model), "revision": folder.name, "path": None}
    if not (folder / "config.json").is_file():
        raise ExportError(f"missing file 'config.json' in source model folder {str(folder)!r}")
    weights = [w for w in WEIGHT_FILES if (folder / w).is_file()]
    if not weights:
        raise ExportError(f"no weights ({' or '.join(WEIGHT_FILES)}) in source model folder {str(folder)!r}")
    info["weights"] = describe_files(folder, weights)
    return folder, info


def _download(model, revision):
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=str(model), revision=revision, allow_patterns=SOURCE_PATTERNS))
    except Exception as exc:  # HfHubHTTPError, LocalEntryNotFoundError, HFValidationError, OSError
        # LocalEntryNotFoundError: the Hub could not be reached (or HF_HUB_OFFLINE=1) and the cache lacks it
        error = _HubUnavailable if isinstance(exc, LocalEntryNotFoundError) else ExportError
        raise error(
            f"{model!r} is not a local folder, and as a Hugging Face repo id (revision {revision or 'main'}) "
            f"it could not be had from the Hub or its cache: {type(exc).__name__}: {exc}"
        ) from exc


def read_config(folder):
    """The source's ``config.json`` as a dict."""
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read config.json in {str(folder)!r}: {exc}") from exc
