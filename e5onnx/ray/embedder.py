"""``E5Embedder``: a callable class for ``ray.data.Dataset.map_batches`` (one :class:`~e5onnx.runtime.Embedder` per actor).

Example (Ray >= 2.51: the actor pool is given as ``compute=``, ``concurrency=`` is deprecated)::

    import ray
    from e5onnx.ray import E5Embedder, actor_plan, node_resources

    plan = actor_plan(node_resources())  # one 1-thread actor per CPU (see e5onnx.ray.plan)
    ds = ray.data.read_parquet("docs/").map_batches(
        E5Embedder, fn_constructor_kwargs={"model": "/models/e5-small", "threads": plan.threads},
        compute=ray.data.ActorPoolStrategy(size=plan.size), num_cpus=plan.num_cpus, memory=plan.memory,
        batch_size=256, batch_format="pyarrow")
"""

import math
import os

import numpy as np

from ..errors import InvalidInputError
from ..runtime.arguments import flag, whole_number
from ..runtime.embedder import Embedder
from ..runtime.prepared import KINDS
from ._ray import pyarrow as pa
from ._ray import ray

#: Columns whose value names a row in an error message, the first present wins (the corpus job's columns).
ROW_LABEL_COLUMNS = ("where", "id")


def assigned_cpus():
    """CPUs Ray assigned to the calling worker or actor (float, e.g. ``1.5``), or ``None`` outside a Ray worker
    (no Ray connection, or the driver)."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    return float(context.get_assigned_resources().get("CPU", 0.0))


def threads_for(cpus):
    """onnxruntime intra-op threads for ``cpus`` assigned CPUs: the whole CPUs (fractions are not used), at least 1,
    at most this machine's logical CPUs (the most an :class:`~e5onnx.runtime.Embedder` accepts).

    onnxruntime ignores ``OMP_NUM_THREADS`` (which Ray sets), so the count has to be passed to the session.
    """
    whole = math.floor(cpus + 1e-9) if cpus else 0
    return max(1, min(whole, os.cpu_count() or 1))


class E5Embedder:
    """Embed a text column of pyarrow batches; for ``Dataset.map_batches(E5Embedder, batch_format="pyarrow", ...)``.

    The model is loaded once per actor, in the constructor, through the public API
    (:meth:`Embedder.load <e5onnx.runtime.Embedder.load>`); each call is :meth:`~e5onnx.runtime.Embedder.prepare`
    + :meth:`~e5onnx.runtime.Embedder.run` (length-sorted forward passes of at most ``batch_size`` texts and
    :data:`~e5onnx.config.TOKEN_BUDGET` padded tokens). A text's vector does not depend on its batch-mates beyond
    float rounding (fp32: within 1e-6 of embedding all texts in one call), so it does not matter which Ray batch
    a row lands in.

    Args:
        model: exported model folder (or Hub id) as :meth:`Embedder.load <e5onnx.runtime.Embedder.load>` takes;
            every node must see it at that path.
        variant: ``"auto"`` (default), ``"fp32"``, ``"optimized"``, ``"int8"`` or ``"bf16"``. On a cluster of
            mixed CPUs pass the driver's resolved variant, so every node runs the same graph.
        text_column: the input column of texts (``string``/``large_string``; null rows pass through).
        embedding_column: the output column, ``fixed_size_list<float32>[dim]``.
        kind: ``"passage"`` (default, adds ``passage: ``), ``"query"`` (``query: ``) or None (texts as given).
        truncate: cut texts over the max length (default), or refuse them (the call raises).
        batch_size: most texts per forward pass.
        tokens_column: if a name, also output each row's real token count (``[CLS]``/``[SEP]`` included) as
            ``int32`` in that column (null where the text is null).
        threads: onnxruntime intra-op threads; default: the CPUs Ray assigned to this actor
            (``ray.get_runtime_context().get_assigned_resources()["CPU"]``, whole CPUs, at least 1; outside a
            Ray worker: the Embedder's default). Inter-op threads are always 1 (sequential execution).

    Attributes:
        embedder: the :class:`~e5onnx.runtime.Embedder`.
        threads: the intra-op thread count used.
        dim: embedding width.

    Raises:
        InvalidInputError: a bad argument (``kind``, ``truncate``, ``batch_size``, ``threads``, column names).
        ModelFolderError, IntegrityError, BackendUnavailableError: as :meth:`Embedder.load`.
    """

    def __init__(self, model, variant="auto", text_column="text", embedding_column="embedding", kind="passage",
                 truncate=True, batch_size=32, tokens_column=None, threads=None):
        if kind not in KINDS:
            raise InvalidInputError(f"kind must be 'query', 'passage' or None, got {kind!r}")
        for name, value in (("text_column", text_column), ("embedding_column", embedding_column)):
            if not isinstance(value, str) or not value:
                raise InvalidInputError(f"{name} must be a non-empty str, got {value!r}")
        if tokens_column is not None and (not isinstance(tokens_column, str) or not tokens_column):
            raise InvalidInputError(f"tokens_column must be None or a non-empty str, got {tokens_column!r}")
        outputs = [embedding_column] + ([tokens_column] if tokens_column else [])
        if len(set(outputs + [text_column])) != len(outputs) + 1:
            raise InvalidInputError(f"text_column, embedding_column and tokens_column must differ, got "
                                    f"{text_column!r}, {embedding_column!r}, {tokens_column!r}")
        self.text_column, self.embedding_column, self.tokens_column = text_column, embedding_column, tokens_column
        self.kind = kind
        self.truncate = flag("truncate", truncate)
        self.batch_size = whole_number("batch_size", batch_size)
        if threads is None:
            cpus = assigned_cpus()
            threads = None if cpus is None else threads_for(cpus)
        self.embedder = Embedder.load(model, variant=variant, threads=threads)
        self.threads = self.embedder.threads
        self.dim = self.embedder.dim

    def __call__(self, batch):
        """Embed one batch.

        Args:
            batch: ``pyarrow.Table`` of ``n`` rows with :attr:`text_column` (string; nulls allowed).

        Returns:
            ``pyarrow.Table``: ``batch``'s columns unchanged, then ``embedding_column``
            (``fixed_size_list<float32>[dim]``, unit L2 rows, null where the text is null) and, if asked,
            ``tokens_column`` (``int32``, null where the text is null).

        Raises:
            InvalidInputError: the text column is missing or not strings, an output column already exists, or a
                non-null text cannot be embedded (over the max length with ``truncate=False``): the message names
                the row (its index in this batch, and its ``where``/``id`` column when the batch has one).
        """
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if not isinstance(batch, pa.Table):
            raise InvalidInputError(f"E5Embedder takes pyarrow batches (map_batches(..., batch_format='pyarrow')), "
                                    f"got {type(batch).__name__}")
        names = batch.column_names
        if self.text_column not in names:
            raise InvalidInputError(f"the batch has no column {self.text_column!r} (columns: {', '.join(names)})")
        for out in (self.embedding_column, self.tokens_column):
            if out is not None and out in names:
                raise InvalidInputError(f"the batch already has a column {out!r}: choose another output column name")
        column = batch.column(self.text_column)
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
                or pa.types.is_string_view(kind)):
            raise InvalidInputError(f"column {self.text_column!r} must hold strings, got {kind}")
        texts = column.to_pylist()
        good = [i for i, text in enumerate(texts) if text is not None]
        prepared = self.embedder.prepare([texts[i] for i in good], self.kind, self.truncate)
        if prepared.errors:
            first = prepared.errors[0]
            row = good[first.index]
            raise InvalidInputError(f"{self.text_column}[{row}] of this batch{self._label(batch, row)}: {first.reason}",
                                    index=row)
        n, dim = len(texts), self.dim
        vectors = np.zeros((n, dim), dtype=np.float32)
        tokens = np.zeros(n, dtype=np.int32)
        if good:
            vectors[good] = self.embedder.run(prepared, batch_size=self.batch_size)
            tokens[good] = prepared.token_counts
        nulls = None
        if len(good) < n:
            nulls = np.ones(n, dtype=bool)
            nulls[good] = False
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim,
                                                      mask=None if nulls is None else pa.array(nulls))
        out = batch.append_column(self.embedding_column, embedding)
        if self.tokens_column:
            out = out.append_column(self.tokens_column, pa.array(tokens, mask=nulls, type=pa.int32()))
        return out

    @staticmethod
    def _label(batch, row):
        for name in ROW_LABEL_COLUMNS:
            if name in batch.column_names:
                return f" ({name} {batch.column(name)[row].as_py()!r})"
        return ""

    def __repr__(self):
        return (f"E5Embedder({self.embedder!r}, text_column={self.text_column!r}, "
                f"embedding_column={self.embedding_column!r}, kind={self.kind!r})")


class WindowEmbedder(E5Embedder):
    """:class:`E5Embedder` over windows: each input row is one window of records
    (:func:`~e5onnx.ray.records.grouped`: every column a list), embedded as one call, so which texts share forward
    passes does not depend on how Ray blocks and batches the rows (the corpus job's Ray backend,
    :mod:`e5onnx.ray.windows`). Arguments as :class:`E5Embedder`.
    """

    def __call__(self, batch):
        """Embed every row (window) of ``batch`` separately.

        Args:
            batch: ``pyarrow.Table``, one row per window, :attr:`text_column` ``list<string>``.

        Returns:
            ``pyarrow.Table``, one row per window: ``batch``'s columns, then ``embedding_column``
            (``list<fixed_size_list<float32>[dim]>``) and ``tokens_column`` (``list<int32>``) if asked.

        Raises:
            InvalidInputError: as :meth:`E5Embedder.__call__`, for the first window with a bad row.
        """
        from .records import grouped, ungrouped

        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        return pa.concat_tables([grouped(super(WindowEmbedder, self).__call__(ungrouped(batch.slice(i, 1))))
                                 for i in range(batch.num_rows)])
