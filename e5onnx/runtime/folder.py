"""Find a model folder: a local path, or a Hugging Face Hub repository holding an e5onnx export.

Hub repositories are fetched with huggingface-hub, so its cache and ``HF_HUB_OFFLINE=1`` apply; only the
manifest, the tokenizer and the requested variant's files are downloaded. A local folder is used as it is,
with no network access at all.
"""

import os
import re
from collections import namedtuple
from pathlib import Path

from ..config import MANIFEST_FILE, TOKENIZER_FILE
from ..errors import InvalidInputError, ModelFolderError
from .arguments import whole_number

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def looks_like_path(model):
    """True for strings that can only be paths: absolute, ``./``, ``../``, ``~``, or with a backslash."""
    text = str(model)
    return Path(text).is_absolute() or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1


def is_local(model):
    """True when ``model`` names an existing local path."""
    return Path(model).expanduser().exists()


def local_folder(model):
    """Resolve a local model folder path.

    Raises:
        ModelFolderError: the path exists but is not a folder.
    """
    path = Path(model).expanduser().resolve()
    if not path.is_dir():
        raise ModelFolderError(f"{str(model)!r} is not a folder")
    return path


def hub_download(repo_id, revision=None, files=(MANIFEST_FILE,)):
    """Download ``files`` of Hub model repo ``repo_id`` at ``revision`` (cache honoured); return the folder.

    Raises:
        ModelFolderError: ``repo_id`` is neither an existing path nor a valid repo id, or the download
            failed (offline without a cached copy, unknown repo or revision, missing file).
    """
    if looks_like_path(repo_id) or not _REPO_ID.match(str(repo_id)):
        raise ModelFolderError(f"no such folder {str(repo_id)!r} (and it is not a Hugging Face repo id)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError

    try:
        folder = snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=list(files))
    except (HfHubHTTPError, OSError, ValueError) as exc:  # LocalEntryNotFoundError is an OSError/ValueError
        raise ModelFolderError(
            f"{repo_id!r} is not a local folder, and as a Hugging Face repo id (revision {revision or 'main'}) "
            f"its files {list(files)} could not be had from the Hub or its cache: {type(exc).__name__}: {exc}"
        ) from exc
    folder = Path(folder)
    missing = [f for f in files if not (folder / f).exists() and "*" not in f]
    if missing:
        raise ModelFolderError(f"Hub repo {repo_id!r} has no {missing} (is it an e5onnx export?)")
    return folder


def fetch_model_folder(model, files_for, revision=None):
    """Return a local folder holding ``manifest.json`` and the files ``files_for(manifest)`` lists.

    Args:
        model: a local folder path or a Hub repo id.
        files_for: callable ``Manifest -> list[str]`` naming the files needed besides the manifest.
        revision: Hub revision (branch, tag or commit); ignored for local folders.
    """
    from .manifest import Manifest

    if is_local(model):
        if revision is not None:
            raise ModelFolderError(f"revision {revision!r} applies to Hub repo ids, but {str(model)!r} is a local folder")
        folder = local_folder(model)
        return folder, Manifest.read(folder)
    folder = hub_download(model, revision, files=(MANIFEST_FILE,))
    manifest = Manifest.read(folder)
    needed = [MANIFEST_FILE, TOKENIZER_FILE, *files_for(manifest)]
    # Pin the second download to the commit the manifest came from, so the files match it.
    folder = hub_download(model, folder.name, files=needed)
    return folder, manifest


#: What :func:`resolve_model` finds: ``folder`` (Path), ``manifest`` (:class:`~e5onnx.runtime.manifest.Manifest`),
#: ``variant`` (the chosen name), ``model_path`` and ``tokenizer_path`` (checked files), ``max_length`` (int).
ResolvedModel = namedtuple("ResolvedModel", "folder manifest variant model_path tokenizer_path max_length")


def resolve_model(model, variant="auto", *, revision=None, max_length=None, verify=True):
    """Find a model's files without loading a session: the folder (downloaded from the Hub when ``model`` is a
    repo id), the variant ``variant`` resolves to on this CPU, and its ONNX file and tokenizer checked against
    the manifest. :meth:`Embedder.load <e5onnx.runtime.Embedder.load>` is this plus the session; a Ray driver
    uses it alone (the actors load the sessions).

    Args and Raises: as :meth:`Embedder.load <e5onnx.runtime.Embedder.load>`.

    Returns:
        :data:`ResolvedModel`.
    """
    from .variants import check_variant_name

    check_variant_name(variant)  # before any download
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise InvalidInputError(f"model must be a folder path or a Hub repo id, got {model!r}")
    folder, manifest = fetch_model_folder(model, lambda m: [m.variant_file(m.choose_variant(variant))], revision)
    chosen = manifest.choose_variant(variant)
    from .manifest import check_file

    try:
        model_path = check_file(folder, manifest.variant_file(chosen), manifest, verify)
    except ModelFolderError as exc:
        if variant == "auto" and chosen != "fp32":
            raise type(exc)(f"{exc} (variant 'auto' chose {chosen!r}; pass variant='fp32' to "
                            "use the plain graph)") from None
        raise
    tokenizer_path = check_file(folder, TOKENIZER_FILE, manifest, verify)
    limit = manifest.max_length
    max_length = limit if max_length is None else whole_number("max_length", max_length, 2, limit)
    return ResolvedModel(folder, manifest, chosen, model_path, tokenizer_path, max_length)
