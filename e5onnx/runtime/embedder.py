"""The :class:`Embedder`: texts in, ``(n, dim)`` float32 unit vectors out, without torch."""

from pathlib import Path

import numpy as np

from ..config import (
    DEFAULT_BATCH_SIZE,
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    TOKEN_BUDGET,
    TOKENIZE_CHUNK,
    VARIANT_BACKENDS,
)
from ..errors import E5OnnxError, InvalidInputError, ModelFolderError
from . import vectors as forms
from .arguments import truncation, whole_number
from .folder import resolve_model
from .manifest import vectors_identity
from .packing import plan_passes
from .pooling import l2_normalize, mean_pool
from .prepared import Prepared, parts_of, prepare_texts
from .session import OnnxEncoder
from .texts import as_list, as_text_list
from .tokenizer import TextTokenizer
from .tokens import TokenLevel
from .vectors import VectorForms
from .windows import combine


class Embedder(TokenLevel, VectorForms):
    """Embed texts with an exported ONNX model: tokenise → run the graph → masked mean pool → L2 normalise.

    Build one with :meth:`load` (model folder or Hub repo, checked against its manifest) or directly from
    files. One ONNX Runtime session per Embedder, reused by every call; calls are thread-safe. Token-level
    methods (:meth:`tokenize`, :meth:`pad`, :meth:`tokens`, :meth:`prepare_ids`, :meth:`embed_token_ids`) come
    from :class:`~e5onnx.runtime.tokens.TokenLevel`, the output forms' (:meth:`quantize`,
    :meth:`check_output`) from :class:`~e5onnx.runtime.vectors.VectorForms`.

    Attributes:
        dim: embedding width (384 for e5-small); :meth:`embed` returns ``(n, dim)`` float32.
        max_length: tokens per text, special tokens included.
        threads: ONNX Runtime intra-op threads.
        variant: ``"fp32"``, ``"optimized"``, ``"int8"`` or ``"bf16"``.
        query_prefix, passage_prefix: what :meth:`embed_queries` / :meth:`embed_passages` add.
        manifest: the model folder's :class:`~e5onnx.runtime.manifest.Manifest`, or ``None``.
        embedding_ranges: ``(2, dim)`` float32 per-dimension min and max for int8 / uint8 output (the manifest's
            ``embedding_ranges``), or None (an older export, or no manifest).

    Args:
        model_path: the ``.onnx`` file.
        tokenizer_path: the ``tokenizer.json`` file.
        max_length: tokens per text, special tokens included (e5-small: 512).
        threads: ONNX Runtime intra-op threads; default ``$E5ONNX_THREADS`` or the CPUs this process may
            use (affinity mask and cgroup quota).
        pad_token_id: padding id (default: the tokenizer's; :meth:`load` passes the manifest's, 1 for XLM-R).
        variant: label of the ONNX variant, for :attr:`variant`; ``"bf16"`` runs the file on OpenVINO in
            bfloat16 (:mod:`~e5onnx.runtime.openvino_session`), every other variant on onnxruntime.
        manifest: the folder's :class:`~e5onnx.runtime.manifest.Manifest`, if any, for :attr:`manifest`.

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
        self._tokenizer = TextTokenizer(tokenizer_path, max_length, pad_token_id)
        backend, precision = VARIANT_BACKENDS.get(variant, ("onnxruntime", None))
        if backend == "openvino":
            from .openvino_session import OpenVinoEncoder

            self.encoder = OpenVinoEncoder(self.model_path, threads, precision)
        else:
            self.encoder = OnnxEncoder(self.model_path, threads)
        recorded = manifest.embedding_dim if manifest is not None else None
        if self.encoder.dim and recorded and self.encoder.dim != recorded:
            raise ModelFolderError(f"{str(model_path)!r} outputs {self.encoder.dim} dims but the manifest records "
                                   f"embedding_dim {recorded}")
        #: Prefixes added by :meth:`embed_queries` / :meth:`embed_passages` (the manifest's, else e5's).
        self.query_prefix = manifest.query_prefix if manifest is not None else QUERY_PREFIX
        self.passage_prefix = manifest.passage_prefix if manifest is not None else PASSAGE_PREFIX
        dim = self.encoder.dim or recorded
        if not dim:  # dynamic last axis and no manifest: ask the graph once
            ids, mask = self._tokenizer.pad(self._tokenizer.encode([""]), self.encoder.id_dtype)
            dim = int(self.encoder.run(ids, mask).shape[-1])
        self.dim = int(dim)
        self.embedding_ranges = forms.ranges_array(manifest.embedding_ranges, self.dim) if manifest else None

    @classmethod
    def load(cls, model, variant="auto", threads=None, *, revision=None, max_length=None, verify=True):
        """Load an exported model folder, or a Hub repo holding one.

        Args:
            model: local folder path, or Hub repo id (downloaded with huggingface-hub; the HF cache and
                ``HF_HUB_OFFLINE=1`` are honoured). A local folder is never looked up online.
            variant: ``"fp32"``, ``"optimized"``, ``"int8"``, ``"bf16"`` or ``"auto"`` (default: the fastest whose
                recorded parity passed and that suits this CPU, see
                :meth:`~e5onnx.runtime.manifest.Manifest.choose_variant`).
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
        found = resolve_model(model, variant, revision=revision, max_length=max_length, verify=verify)
        return cls(found.model_path, found.tokenizer_path, max_length=found.max_length, threads=threads,
                   pad_token_id=found.manifest.pad_token_id, variant=found.variant, manifest=found.manifest)

    @property
    def max_length(self):
        """Tokens per text, special tokens included."""
        return self._tokenizer.max_length

    @property
    def prefixes(self):
        """``{"query": query_prefix, "passage": passage_prefix}``: what each ``kind`` adds."""
        return {"query": self.query_prefix, "passage": self.passage_prefix}

    @property
    def vocab_size(self):
        """Number of token ids (added tokens included): ids run from 0 to ``vocab_size - 1``."""
        return self._tokenizer.vocab_size

    @property
    def threads(self):
        """ONNX Runtime intra-op thread count."""
        return self.encoder.threads

    def prepare(self, texts, kind=None, truncate=True):
        """Tokenise one request for :meth:`run`: validate the texts, add the ``kind`` prefix once, tokenise.

        Refused texts do not raise here: each gets a :class:`~e5onnx.errors.TextError` (with its index) in
        :attr:`Prepared.errors <e5onnx.runtime.prepared.Prepared.errors>`, so a caller can report them its own
        way (``prepared.raise_errors()``, or name the field as the server does).

        Args:
            texts: a ``str`` (one text) or an ordered iterable of ``str`` (see :func:`~e5onnx.runtime.texts.as_list`).
            kind: ``"query"`` (adds :attr:`query_prefix`), ``"passage"`` (adds :attr:`passage_prefix`), or None
                (texts as given); a text that already starts with the prefix keeps it
                (:func:`~e5onnx.runtime.texts.has_prefix`).
            truncate: cut a text over :attr:`max_length` tokens to ``[CLS]``, its first ``max_length - 2`` word
                pieces and ``[SEP]`` (XLM-R: ``<s>`` ... ``</s>``) (default, True); refuse it (False); or
                ``"windows"``: embed it whole as overlapping windows of at most :attr:`max_length` tokens, each with
                the e5 prefix, combined by their token-weighted mean (:mod:`~e5onnx.runtime.windows`; a text that
                fits is one row, as with True).

        Returns:
            a :class:`~e5onnx.runtime.prepared.Prepared` of ``len(texts)`` texts.

        Raises:
            InvalidInputError: ``texts`` is not a str or an ordered iterable of them (None, bytes, a dict, a
                set), or a bad ``kind`` or ``truncate``.
        """
        return self._prepare(as_list(texts), kind, truncation(truncate))

    def _prepare(self, texts, kind, truncate, first_index=0, checked=False):
        """:meth:`prepare` on a list; error indices count from ``first_index``; ``checked``: every item is already
        a valid ``str`` (:func:`~e5onnx.runtime.texts.as_text_list`), so it is not checked again."""
        return prepare_texts(self._tokenizer, texts, kind, truncate, self.prefixes, first_index, checked)

    def run(self, prepared, normalize=True, batch_size=DEFAULT_BATCH_SIZE, token_budget=None):
        """Embed what :meth:`prepare` made: run the graph, masked mean pooling, L2 normalisation.

        Several Prepared (e.g. queued requests) are run together: their rows (a text's windows are several rows)
        are sorted by length and packed greedily into forward passes of at most ``batch_size`` rows and
        ``token_budget`` padded tokens (:func:`~e5onnx.runtime.packing.plan_passes`); each gets its own vectors
        back, one per text. Vectors do not depend on the packing beyond float rounding. The ids are not checked
        again: this Embedder's tokenizer made them.

        Args:
            prepared: a :class:`~e5onnx.runtime.prepared.Prepared` from this Embedder, or a list of them.
            normalize: L2-normalise (default); False gives the masked mean-pooled ``last_hidden_state``. One bool
                for all, or one per Prepared.
            batch_size: most texts per forward pass, a positive int.
            token_budget: most padded tokens per forward pass (default :data:`~e5onnx.config.TOKEN_BUDGET`).

        Returns:
            ``(n, dim)`` float32 for one Prepared of ``n`` texts (dim 384 for e5-small; unit rows when
            normalised), or a list of such arrays, one per Prepared.

        Raises:
            TextError: a Prepared holds a refused text (the first one, by index).
            InvalidInputError: a Prepared from another Embedder, or a bad ``normalize``, ``batch_size`` or
                ``token_budget``.
            E5OnnxError: onnxruntime failed or the model produced non-finite values (a broken graph).
        """
        parts, flags = parts_of(prepared, normalize)
        batch_size = whole_number("batch_size", batch_size)
        if token_budget is not None:
            token_budget = whole_number("token_budget", token_budget)
        for part in parts:
            if part.owner is not self._tokenizer:
                raise InvalidInputError("this Prepared was made by another Embedder: prepare the texts with this one")
            part.raise_errors()
        out = self._run(parts, flags, batch_size, token_budget)
        return out[0] if isinstance(prepared, Prepared) else out

    def _run(self, parts, flags, batch_size, token_budget, first_index=0):
        """:meth:`run` on checked parts; ``first_index`` is the caller's index of the first text (for errors)."""
        rows = [row for part in parts for row in part.input_ids]
        pooled = self._embed_rows(rows, batch_size, first_index, normalize=False, token_budget=token_budget)
        out, start = [], 0
        for part, norm in zip(parts, flags):
            vectors = pooled[start:start + len(part.input_ids)]
            if part.windows is not None:
                vectors = combine(vectors, part.row_counts, part.windows)
            out.append(l2_normalize(vectors) if norm else vectors)
            start += len(part.input_ids)
        return out

    def embed(self, texts, batch_size=DEFAULT_BATCH_SIZE, truncate=True, token_budget=None, output="float"):
        """Embed texts as given (no prefix added): :meth:`prepare` then :meth:`run`, in chunks.

        Texts are tokenised, sorted by length and packed greedily into forward passes of at most
        ``batch_size`` texts and :data:`~e5onnx.config.TOKEN_BUDGET` padded tokens (texts x longest text of
        the pass; a longer text runs alone), see :func:`plan_passes`; results come back in input order and
        do not depend on the packing beyond float rounding. A text over :attr:`max_length` tokens is
        truncated to ``[CLS]``, its first ``max_length - 2`` word pieces and ``[SEP]`` (XLM-R: ``<s>``, ``</s>``),
        refused when ``truncate=False``, or embedded whole as overlapping windows when ``truncate="windows"``
        (:mod:`~e5onnx.runtime.windows`). An empty or whitespace-only text is embedded as ``[CLS] [SEP]``.
        Texts are tokenised :data:`~e5onnx.config.TOKENIZE_CHUNK` at a time, to bound memory on huge inputs.

        Args:
            texts: a ``str`` (one text) or an iterable of ``str``.
            batch_size: most rows (texts, or windows of long texts) per forward pass, a positive int.
            truncate: cut over-long texts (default True), refuse them (False), or ``"windows"``.
            token_budget: most padded tokens per forward pass, a positive int (default
                :data:`~e5onnx.config.TOKEN_BUDGET`); ``batch_size * max_length`` runs each ``batch_size``
                texts as one padded pass (the export's batch-invariance checks do).
            output: the vectors' form (:mod:`~e5onnx.runtime.vectors`): ``"float"`` (default), ``"int8"`` or
                ``"uint8"`` (scalar, with the manifest's fixed ranges), ``"binary"`` or ``"ubinary"`` (8 dims a byte).

        Returns:
            ``(n, dim)`` float32 (dim 384 for e5-small), each row of unit L2 norm, ``(0, dim)`` for no texts;
            ``(n, dim)`` int8 / uint8, or ``(n, ceil(dim / 8))`` int8 (binary) / uint8 (ubinary).

        Raises:
            TextError: a non-``str`` item (``None``, bytes, ...), a lone surrogate, an over-long text with
                ``truncate=False``, or one over :data:`~e5onnx.config.WINDOW_MAX_TOKENS` with windows; the
                message names the index (an InvalidInputError).
            InvalidInputError: a bad ``texts`` container, ``batch_size``, ``token_budget``, ``truncate`` or ``output``.
            ModelFolderError: ``output`` int8 / uint8 and the model folder records no ranges (an older export:
                re-export it).
            E5OnnxError: the model produced non-finite values (a broken graph).
        """
        return self._embed(texts, None, batch_size, truncate, token_budget, output)

    def _embed(self, texts, kind, batch_size, truncate, token_budget=None, output="float"):
        """:meth:`embed` with the ``kind`` prefix, in chunks of :data:`~e5onnx.config.TOKENIZE_CHUNK` texts."""
        texts = as_text_list(texts)  # every item checked before anything is computed
        batch_size = whole_number("batch_size", batch_size)
        if token_budget is not None:
            token_budget = whole_number("token_budget", token_budget)
        truncate = truncation(truncate)
        self.check_output(output)
        chunks = range(0, len(texts), TOKENIZE_CHUNK)
        if truncate is False:  # refuse an over-long text before computing anything
            for start in chunks:
                self._prepare(texts[start:start + TOKENIZE_CHUNK], kind, False, start, checked=True).raise_errors()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in chunks:
            prepared = self._prepare(texts[start:start + TOKENIZE_CHUNK], kind, truncate or True, start, checked=True)
            prepared.raise_errors()  # windows: a text over WINDOW_MAX_TOKENS
            out[start:start + len(prepared)] = self._run([prepared], [True], batch_size, token_budget, start)[0]
        return out if output == "float" else forms.quantize(out, output, self.embedding_ranges)

    def embed_queries(self, texts, batch_size=DEFAULT_BATCH_SIZE, truncate=True, output="float"):
        """Embed search queries: :attr:`query_prefix` (``"query: "``) is added once (see :func:`~e5onnx.runtime.texts.has_prefix`).

        Returns and raises as :meth:`embed`.
        """
        return self._embed(texts, "query", batch_size, truncate, None, output)

    def embed_passages(self, texts, batch_size=DEFAULT_BATCH_SIZE, truncate=True, output="float"):
        """Embed documents: :attr:`passage_prefix` (``"passage: "``) is added once (see :func:`~e5onnx.runtime.texts.has_prefix`).

        Returns and raises as :meth:`embed`.
        """
        return self._embed(texts, "passage", batch_size, truncate, None, output)

    def identity(self):
        """What identifies this Embedder's vectors (bytes): sha256 of its ONNX file and tokenizer (the manifest's,
        else hashed now), variant, max length, width and prefixes; equal for two Embedders that give the same
        vectors (:func:`~e5onnx.runtime.manifest.vectors_identity`). The server's result cache keys on it."""
        return vectors_identity(self)

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

    def _forward(self, rows, where, normalize=True):
        input_ids, attention_mask = self._tokenizer.pad(rows, self.encoder.id_dtype)
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
