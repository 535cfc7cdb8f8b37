"""The :class:`Embedder`: texts in, ``(n, dim)`` float32 unit vectors out, without torch."""

import os
from pathlib import Path

import numpy as np

from ..config import (
    DEFAULT_BATCH_SIZE,
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    TOKEN_BUDGET,
    TOKENIZE_CHUNK,
    TOKENIZER_FILE,
    VARIANT_BACKENDS,
)
from ..errors import E5OnnxError, InvalidInputError, ModelFolderError
from .arguments import flag, whole_number
from .folder import fetch_model_folder
from .manifest import check_file
from .packing import plan_passes
from .pooling import l2_normalize, mean_pool
from .session import OnnxEncoder
from .texts import add_prefix, as_text_list
from .tokenizer import TextTokenizer
from .variants import check_variant_name, choose_variant, variant_file


class Embedder:
    """Embed texts with an exported ONNX model: tokenise → run the graph → masked mean pool → L2 normalise.

    Build one with :meth:`load` (model folder or Hub repo, checked against its manifest) or directly from
    files. One ONNX Runtime session per Embedder, reused by every call; calls are thread-safe.

    Attributes:
        dim: embedding width (384 for e5-small); :meth:`embed` returns ``(n, dim)`` float32.
        max_length: tokens per text, special tokens included.
        threads: ONNX Runtime intra-op threads.
        variant: ``"fp32"``, ``"optimized"``, ``"int8"`` or ``"bf16"``.
        query_prefix, passage_prefix: what :meth:`embed_queries` / :meth:`embed_passages` add.
        manifest: the model folder's manifest (dict), or ``None``.

    Args:
        model_path: the ``.onnx`` file.
        tokenizer_path: the ``tokenizer.json`` file.
        max_length: tokens per text, special tokens included (e5-small: 512).
        threads: ONNX Runtime intra-op threads; default ``$E5ONNX_THREADS`` or the CPUs this process may
            use (affinity mask and cgroup quota).
        pad_token_id: padding id (default: the tokenizer's ``[PAD]``).
        variant: label of the ONNX variant, for :attr:`variant`; ``"bf16"`` runs the file on OpenVINO in
            bfloat16 (:mod:`~e5onnx.runtime.openvino_session`), every other variant on onnxruntime.
        manifest: the folder's manifest, if any, for :attr:`manifest`.

    Raises:
        ModelFolderError: a file cannot be loaded, or the graph lacks ``last_hidden_state``.
        BackendUnavailableError: ``variant="bf16"`` without the ``openvino`` package.
        InvalidInputError: ``max_length`` or ``threads`` is not a positive integer.
    """

    def __init__(self, model_path, tokenizer_path, *, max_length, threads=None, pad_token_id=None,
                 variant="fp32", manifest=None):
        max_length = whole_number("max_length", max_length, 2)
        self.model_path = Path(model_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.variant = variant
        self.manifest = manifest
        self.tokenizer = TextTokenizer(tokenizer_path, max_length, pad_token_id)
        backend, precision = VARIANT_BACKENDS.get(variant, ("onnxruntime", None))
        if backend == "openvino":
            from .openvino_session import OpenVinoEncoder

            self.encoder = OpenVinoEncoder(self.model_path, threads, precision)
        else:
            self.encoder = OnnxEncoder(self.model_path, threads)
        recorded = (manifest or {}).get("embedding_dim")
        if self.encoder.dim and recorded and self.encoder.dim != recorded:
            raise ModelFolderError(f"{str(model_path)!r} outputs {self.encoder.dim} dims but the manifest records "
                                   f"embedding_dim {recorded}")
        prefixes = (manifest or {}).get("prefixes", {})
        #: Prefixes added by :meth:`embed_queries` / :meth:`embed_passages` (the manifest's, else e5's).
        self.query_prefix = prefixes.get("query", QUERY_PREFIX)
        self.passage_prefix = prefixes.get("passage", PASSAGE_PREFIX)
        dim = self.encoder.dim or recorded
        if not dim:  # dynamic last axis and no manifest: ask the graph once
            ids, mask = self.tokenizer.pad(self.tokenizer.encode([""]), self.encoder.id_dtype)
            dim = int(self.encoder.run(ids, mask).shape[-1])
        self.dim = int(dim)

    @classmethod
    def load(cls, model, variant="auto", threads=None, *, revision=None, max_length=None, verify=True):
        """Load an exported model folder, or a Hub repo holding one.

        Args:
            model: local folder path, or Hub repo id (downloaded with huggingface-hub; the HF cache and
                ``HF_HUB_OFFLINE=1`` are honoured). A local folder is never looked up online.
            variant: ``"fp32"``, ``"optimized"``, ``"int8"``, ``"bf16"`` or ``"auto"`` (default: the fastest whose
                recorded parity passed, see :func:`choose_variant`).
            threads: ONNX Runtime intra-op threads (see the class).
            revision: Hub branch, tag or commit (only for Hub repo ids).
            max_length: override the manifest's max length (at most the manifest's).
            verify: check the sha256 of the ONNX file and tokenizer against the manifest (default True).

        Raises:
            ModelFolderError: the folder or a file is missing (message names both), or the variant is absent.
            IntegrityError: a file's sha256 differs from the manifest.
            InvalidInputError: a bad ``variant``, ``threads`` or ``max_length``.
            BackendUnavailableError: ``bf16`` asked for by name without OpenVINO installed.
        """
        check_variant_name(variant)  # before any download
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise InvalidInputError(f"model must be a folder path or a Hub repo id, got {model!r}")

        def files_for(manifest):
            return [variant_file(manifest, choose_variant(manifest, variant))]

        folder, manifest = fetch_model_folder(model, files_for, revision)
        chosen = choose_variant(manifest, variant)
        model_file = variant_file(manifest, chosen)
        try:
            model_path = check_file(folder, model_file, manifest, verify)
        except ModelFolderError as exc:
            if variant == "auto" and chosen != "fp32":
                raise type(exc)(f"{exc} (variant 'auto' chose {chosen!r}; pass variant='fp32' to "
                                "use the plain graph)") from None
            raise
        tokenizer_path = check_file(folder, TOKENIZER_FILE, manifest, verify)
        limit = manifest["max_length"]
        max_length = limit if max_length is None else whole_number("max_length", max_length, 2, limit)
        return cls(model_path, tokenizer_path, max_length=max_length, threads=threads,
                   pad_token_id=manifest.get("pad_token_id"), variant=chosen, manifest=manifest)

    @property
    def max_length(self):
        """Tokens per text, special tokens included."""
        return self.tokenizer.max_length

    @property
    def threads(self):
        """ONNX Runtime intra-op thread count."""
        return self.encoder.threads

    def tokenize(self, texts, truncate=True):
        """Token ids of each text exactly as :meth:`embed` feeds them (special tokens included).

        Returns:
            list of lists of int, one per text.

        Raises:
            InvalidInputError: as :meth:`embed`.
        """
        return self.tokenizer.encode(as_text_list(texts), flag("truncate", truncate))

    def embed(self, texts, batch_size=DEFAULT_BATCH_SIZE, truncate=True, token_budget=None):
        """Embed texts as given (no prefix added).

        Texts are tokenised, sorted by length and packed greedily into forward passes of at most
        ``batch_size`` texts and :data:`~e5onnx.config.TOKEN_BUDGET` padded tokens (texts x longest text of
        the pass; a longer text runs alone), see :func:`plan_passes`; results come back in input order and
        do not depend on the packing beyond float rounding. A text over :attr:`max_length` tokens is
        truncated to ``[CLS]``, its first ``max_length - 2`` word pieces and ``[SEP]``, or refused when
        ``truncate=False``. An empty or
        whitespace-only text is embedded as ``[CLS] [SEP]``.

        Args:
            texts: a ``str`` (one text) or an iterable of ``str``.
            batch_size: most texts per forward pass, a positive int.
            truncate: cut over-long texts (default) or refuse them.
            token_budget: most padded tokens per forward pass, a positive int (default
                :data:`~e5onnx.config.TOKEN_BUDGET`); ``batch_size * max_length`` runs each ``batch_size``
                texts as one padded pass (the export's batch-invariance checks do).

        Returns:
            ``(n, dim)`` float32 (dim 384 for e5-small), each row of unit L2 norm; ``(0, dim)`` for no texts.

        Raises:
            InvalidInputError: a non-``str`` item (``None``, bytes, ...), a lone surrogate, an over-long
                text with ``truncate=False`` (each naming the index), or a bad ``batch_size``.
            E5OnnxError: the model produced non-finite values (a broken graph).
        """
        return self._embed(as_text_list(texts), batch_size, truncate, token_budget)

    def _embed(self, texts, batch_size, truncate, token_budget=None):
        """:meth:`embed` on a list already checked by :func:`as_text_list`."""
        batch_size = whole_number("batch_size", batch_size)
        if token_budget is not None:
            token_budget = whole_number("token_budget", token_budget)
        truncate = flag("truncate", truncate)
        if not truncate:  # refuse before computing anything
            for start in range(0, len(texts), TOKENIZE_CHUNK):
                self.tokenizer.encode(texts[start:start + TOKENIZE_CHUNK], False, first_index=start)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = texts[start:start + TOKENIZE_CHUNK]
            rows = self.tokenizer.encode(chunk, truncate=True, first_index=start)
            out[start:start + len(rows)] = self._embed_rows(rows, batch_size, start, token_budget=token_budget)
        return out

    def embed_token_ids(self, rows, batch_size=DEFAULT_BATCH_SIZE, normalize=True):
        """Embed texts already tokenised by :meth:`tokenize` (special tokens included), e.g. by a server that
        counts tokens before it batches requests. Same vectors as :meth:`embed` on the texts.

        Args:
            rows: list of token-id lists, each 1 to :attr:`max_length` ids, each id in the vocabulary.
            batch_size: texts per forward pass, a positive int.
            normalize: L2-normalise (default); False gives the masked mean-pooled ``last_hidden_state``.

        Returns:
            ``(len(rows), dim)`` float32 vectors (unit length when ``normalize``), in input order.

        Raises:
            InvalidInputError: a row that is not a non-empty list of ints in the vocabulary or is longer
                than :attr:`max_length` (the message names its index), or a bad ``batch_size``.
        """
        batch_size = whole_number("batch_size", batch_size)
        vocab = self.tokenizer.vocab_size
        if isinstance(rows, (str, bytes)) or not isinstance(rows, (list, tuple)):
            raise InvalidInputError(f"rows must be a list of token-id lists, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) or not row:
                raise InvalidInputError(f"rows[{i}] must be a non-empty list of token ids", index=i)
            if len(row) > self.max_length:
                raise InvalidInputError(f"rows[{i}] has {len(row)} tokens, over max_length {self.max_length}",
                                        index=i)
            if not all(type(t) is int and 0 <= t < vocab for t in row):
                raise InvalidInputError(f"rows[{i}] holds a token id that is not an int from 0 to {vocab - 1}",
                                        index=i)
        if not rows:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._embed_rows([list(r) for r in rows], batch_size, 0, flag("normalize", normalize))

    def _embed_rows(self, rows, batch_size, first_index, normalize=True, token_budget=None):
        """Vectors of valid token-id rows, packed into forward passes by :func:`plan_passes`.

        Args:
            rows: list of token-id lists (each 1 to :attr:`max_length` ids).
            batch_size: most rows per forward pass.
            first_index: index of ``rows[0]`` in the caller's list, for error messages.
            normalize: L2-normalise the pooled vectors.
            token_budget: most padded tokens per pass (default :data:`~e5onnx.config.TOKEN_BUDGET`).

        Returns:
            ``(len(rows), dim)`` float32, in input order.

        Raises:
            E5OnnxError: onnxruntime failed or the model produced non-finite values.
        """
        budget = TOKEN_BUDGET if token_budget is None else token_budget
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for part in plan_passes([len(r) for r in rows], batch_size, budget):
            out[part] = self._forward([rows[i] for i in part], [first_index + i for i in part], normalize)
        return out

    def embed_queries(self, texts, batch_size=DEFAULT_BATCH_SIZE, truncate=True):
        """Embed search queries: :attr:`query_prefix` (``"query: "``) is added once (see :func:`~e5onnx.runtime.texts.has_prefix`).

        Returns and raises as :meth:`embed`.
        """
        return self._embed(add_prefix(as_text_list(texts), self.query_prefix), batch_size, truncate)

    def embed_passages(self, texts, batch_size=DEFAULT_BATCH_SIZE, truncate=True):
        """Embed documents: :attr:`passage_prefix` (``"passage: "``) is added once (see :func:`~e5onnx.runtime.texts.has_prefix`).

        Returns and raises as :meth:`embed`.
        """
        return self._embed(add_prefix(as_text_list(texts), self.passage_prefix), batch_size, truncate)

    def _forward(self, rows, where, normalize=True):
        input_ids, attention_mask = self.tokenizer.pad(rows, self.encoder.id_dtype)
        hidden = self.encoder.run(input_ids, attention_mask)
        vectors = mean_pool(hidden, attention_mask)
        if normalize:
            vectors = l2_normalize(vectors)
        if not np.isfinite(vectors).all():
            raise E5OnnxError(
                f"the model produced non-finite values for texts {where[:8]}{' ...' if len(where) > 8 else ''}: "
                f"the ONNX file {str(self.model_path)!r} is broken"
            )
        return vectors

    def __repr__(self):
        return (f"Embedder(model_path={str(self.model_path)!r}, variant={self.variant!r}, dim={self.dim}, "
                f"max_length={self.max_length}, threads={self.threads})")
