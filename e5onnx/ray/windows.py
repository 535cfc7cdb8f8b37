"""The Ray backend of a corpus job: :func:`ray_windows` gives the same :class:`~e5onnx.corpus.records.Window` s as
the in-process backend (:func:`e5onnx.corpus.local.local_windows`), embedded by a pool of Ray actors.

Pipeline: :class:`RecordsDatasource` (one read task streaming ``source.records(start)`` on the driver's node,
``num_cpus=0``, one row per window: :func:`~e5onnx.ray.records.grouped`) →
``map_batches(WindowEmbedder, batch_size=1, compute=ActorPoolStrategy(size=...), num_cpus=...)``
(:func:`~e5onnx.ray.plan.actor_plan`: one single-threaded actor per CPU; one call embeds one window) →
``iter_batches`` in the driver, in input order (``preserve_order``) → one Window per row.

A window travels as one row so that Ray, which coalesces and splits blocks by size and bundles them into batches
as they come, cannot change which records are embedded together: the windows are the in-process backend's
(:func:`~e5onnx.corpus.local.windows_of`), so the vectors are too, in every variant.

Resources: the read task asks for no CPU, so the actors can reserve every CPU of a node without leaving the read
unscheduled (with a default read task of 1 CPU and two 1-CPU actors on 2 CPUs the job hung, "backpressured:
ResourceBudget"); reading is ~1000x cheaper than embedding, so it steals nothing measurable. The read task is not
fused into the actors (different remote args), and ``override_num_blocks=1`` keeps Ray from splitting it.

Model folder and input files must be at the same paths on the nodes that use them (the actors' nodes and the
driver's node respectively); Ray Client (``ray://``) is refused by Ray Data for driver-local reads.
"""

import copy
import dataclasses
import functools
import gc
import logging
import os
import re
import warnings
from contextlib import contextmanager

from .. import errors
from ..config import CORPUS_WINDOW_ROWS, DEFAULT_BATCH_SIZE, RAY_BLOCK_BYTES
from ..corpus.local import windows_of
from ..errors import E5OnnxError, InvalidInputError
from ..runtime.arguments import whole_number
from ._ray import pyarrow as pa
from ._ray import ray
from .connect import connect
from .embedder import WindowEmbedder
from .plan import actor_plan, check_plan, node_resources
from .records import (
    checked,
    grouped,
    record_schema,
    records_table,
    ungrouped,
    window_of,
)


def _read_windows(source, start, keep, window_rows, shard_rows):
    """The read task: ``source.records(start)`` cut as :func:`~e5onnx.corpus.local.windows_of`, one
    :func:`~e5onnx.ray.records.grouped` row per window (a generator: Ray streams each out as it is made)."""
    for chunk in windows_of(source.records(start), window_rows, shard_rows):
        yield grouped(records_table([checked(r) for r in chunk], keep))


class RecordsDatasource(ray.data.Datasource):
    """A Ray Data source of a corpus job's records, in input order, one row per window of records.

    Each row is a :func:`~e5onnx.ray.records.grouped` :func:`~e5onnx.ray.records.records_table`: columns
    ``ordinal``, ``where``, ``id``, ``text``, ``error``, ``keep.<name>``, each a list over the window's records.
    One read task streams ``source.records(start)``: reading and parsing a line takes microseconds while
    embedding it takes milliseconds (~1000x), so a single reader keeps any actor pool fed, and one task keeps the
    input order without splitting files. The task runs on the driver's node (``supports_distributed_reads`` is
    False), where the input files are.

    Args:
        source: a picklable source with ``records(start) -> Iterator[Record]`` and ``keep`` (the kept field
            names), e.g. :func:`e5onnx.corpus.sources.open_source`'s.
        start: records to skip (a resumed job's first ordinal).
        window_rows, shard_rows: where windows end, as :func:`~e5onnx.corpus.local.windows_of`.
    """

    def __init__(self, source, start=0, window_rows=CORPUS_WINDOW_ROWS, shard_rows=None):
        super().__init__()
        self.source, self.start = source, whole_number("start", start, 0)
        self.keep = tuple(getattr(source, "keep", ()) or ())
        self.window_rows = whole_number("window_rows", window_rows)
        self.shard_rows = None if shard_rows is None else whole_number("shard_rows", shard_rows)

    @property
    def supports_distributed_reads(self):
        return False

    def get_name(self):
        return "E5Records"

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        read = functools.partial(_read_windows, self.source, self.start, self.keep, self.window_rows,
                                 self.shard_rows)
        schema = pa.schema([pa.field(f.name, pa.list_(f.type)) for f in record_schema(self.keep)])
        return [ReadTask(read, metadata, schema=schema, per_task_row_limit=per_task_row_limit)]


@contextmanager
def _data_context(block_bytes=RAY_BLOCK_BYTES):
    """Ray Data settings for the job's datasets (a Dataset keeps a copy of the context it was built in), put back
    afterwards so the caller's context is unchanged: input order kept, no Ray progress bars (the job has its own)."""
    ctx = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start", "target_max_block_size")
    saved = copy.deepcopy(ctx.execution_options), {name: getattr(ctx, name) for name in names}
    try:
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.target_max_block_size = block_bytes
        yield ctx
    finally:
        ctx.execution_options = saved[0]
        for name, value in saved[1].items():
            setattr(ctx, name, value)


def embedded_dataset(source, start, model, variant, kind, plan, window_rows=CORPUS_WINDOW_ROWS, shard_rows=None,
                     batch_size=DEFAULT_BATCH_SIZE, block_bytes=RAY_BLOCK_BYTES):
    """The job's lazy Dataset, one row per window: :class:`RecordsDatasource` (read task ``num_cpus=0``) →
    ``map_batches(WindowEmbedder, batch_size=1, ...)`` with the actor pool of ``plan`` (an
    :class:`~e5onnx.ray.plan.ActorPlan`), adding ``embedding`` and ``tokens``; input order preserved."""
    with _data_context(block_bytes):
        datasource = RecordsDatasource(source, start, window_rows, shard_rows)
        ds = ray.data.read_datasource(datasource, num_cpus=0, override_num_blocks=1)
        return ds.map_batches(
            WindowEmbedder, batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(size=plan.size), num_cpus=plan.num_cpus, memory=plan.memory,
            fn_constructor_kwargs={"model": model, "variant": variant, "kind": kind, "truncate": True,
                                   "batch_size": batch_size, "tokens_column": "tokens", "threads": plan.threads})


def _absolute(source, model):
    """Local paths made absolute (Ray workers need not share the driver's working directory)."""
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
        model = os.path.abspath(model)
    paths = getattr(source, "paths", None)
    if dataclasses.is_dataclass(source) and paths and all(isinstance(p, (str, os.PathLike)) for p in paths):
        fixed = tuple(p if str(p) == "-" or not os.path.exists(p) else type(p)(os.path.abspath(p)) for p in paths)
        if fixed != tuple(paths):
            names = source.names if getattr(source, "names", None) is not None else tuple(map(str, paths))
            source = dataclasses.replace(source, paths=fixed, **({"names": names} if hasattr(source, "names") else {}))
    return source, os.fspath(model) if isinstance(model, os.PathLike) else model


def ray_windows(source, start, model, variant, kind, window_rows, address=None, threads=None, *, shard_rows=None,
                block_bytes=RAY_BLOCK_BYTES, plan=None):
    """The Windows of ``source.records(start)``, cut as :func:`~e5onnx.corpus.local.windows_of`, embedded on Ray.

    The same Windows as the in-process backend (:func:`~e5onnx.corpus.local.local_windows`) for the same records:
    same records (a text the Embedder refuses becomes a bad record with its reason), same token counts, the same
    texts embedded together, so the same vectors in every variant up to the threads' float rounding (fp32: 1e-6).

    Connects first (:func:`connect`), so a bad address raises here, not on the first ``next()``; Ray is shut
    down when the iterator is exhausted or closed only if this call started or connected it.

    Args:
        source: as :class:`RecordsDatasource` (picklable; its files readable on the driver's node). Standard
            input (``paths == ("-",)``) cannot be read by a Ray worker and is refused.
        start: records to skip (resume).
        model: the exported model folder, at the same path on every node.
        variant: the variant to run (pass the driver's resolved variant, not ``"auto"``, on mixed CPUs).
        kind: ``"passage"``, ``"query"`` or None.
        window_rows, shard_rows: where Windows end (:func:`~e5onnx.corpus.local.windows_of`).
        address: see :func:`connect`.
        threads: onnxruntime threads per actor (default: :func:`~e5onnx.ray.plan.actor_plan`'s).
        block_bytes: Ray Data's target block size for the job (:data:`~e5onnx.config.RAY_BLOCK_BYTES`).
        plan: an :class:`~e5onnx.ray.plan.ActorPlan` to use instead of :func:`~e5onnx.ray.plan.actor_plan`'s.

    Returns:
        an iterator of :class:`~e5onnx.corpus.records.Window` (``vectors`` ``(good records, dim)`` float32,
        ``token_counts`` ``(good records,)`` int64).

    Raises:
        InvalidInputError: standard input, or a bad ``window_rows``/``start``.
        E5OnnxError: Ray could not be reached (:func:`connect`), or a Ray task failed (its error in the message;
            a model that cannot be loaded on a node, an inference error).
    """
    window_rows = whole_number("window_rows", window_rows)
    start = whole_number("start", start, 0)
    if tuple(getattr(source, "paths", ()) or ()) == ("-",):
        raise InvalidInputError("--ray reads the input on a Ray worker, which cannot see this process's standard "
                                "input: write it to a file and pass that")
    source, model = _absolute(source, model)
    owned = connect(address)
    try:
        if plan is None:
            plan = actor_plan(node_resources(), threads)
        plan = check_plan(plan)
        dataset = embedded_dataset(source, start, model, variant, kind, plan, window_rows, shard_rows,
                                   block_bytes=block_bytes)
    except BaseException as exc:
        if owned:
            ray.shutdown()
        if isinstance(exc, Exception) and not isinstance(exc, E5OnnxError):
            raise E5OnnxError(f"could not set up the Ray job: {type(exc).__name__}: {exc}") from exc
        raise
    return _windows(dataset, tuple(getattr(source, "keep", ()) or ()), owned)


#: Ray Data's warning that an actor pool got fewer input blocks than actors *at planning time*: the job's single
#: read task streams many windows, which the pool shares, so it is noise here.
warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning,
                        module="ray.data")
#: Ray Data's own INFO/WARNING lines during a job ("Progress bars disabled", "execution finished"): the job has its
#: own progress; errors still show.
RAY_DATA_LOG_LEVEL = logging.ERROR


def _windows(dataset, keep, owned):
    """One Window per row of the dataset's batches."""
    batches = _batches(dataset)
    del dataset  # only _batches holds it (see there)
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(max(level, RAY_DATA_LOG_LEVEL))
    try:
        for batch in batches:
            for i in range(batch.num_rows):
                yield window_of(ungrouped(batch.slice(i, 1)), keep)
    finally:
        logger.setLevel(level)
        if owned:
            ray.shutdown()


def _batches(dataset):
    """The dataset's pyarrow batches; a failed Ray task raises an :class:`~e5onnx.errors.E5OnnxError` (the worker's
    own e5onnx error again when it raised one: a bad text, a model that cannot be loaded)."""
    iterator = iter(dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    while True:
        error = None
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except ray.exceptions.RayError as exc:
            error = remote_error(exc)
        if error is not None:
            # Raised outside the except block, holding no reference to Ray's exception; the failed executor's
            # actor handles sit in reference cycles, so their actors (and CPUs) live until a garbage collection:
            # drop this frame's references and collect now, or the next dataset on this Ray may wait for them.
            del iterator, dataset
            gc.collect()
            raise error
        yield batch


#: The last line of an e5onnx error in a Ray worker's traceback text (Ray sends the text, not the exception).
_REMOTE_ERROR = re.compile(r"^e5onnx\.errors\.(\w+): (.+)$", re.MULTILINE)


def remote_error(exc):
    """A fresh :class:`~e5onnx.errors.E5OnnxError` for a Ray error: the worker's e5onnx error (same class, same
    message) when its traceback shows one, else ``E5OnnxError("the Ray job failed: ...")``."""
    found = _REMOTE_ERROR.search(str(exc))
    if found:
        cls = getattr(errors, found.group(1), None)
        cls = InvalidInputError if cls is errors.TextError else cls
        if isinstance(cls, type) and issubclass(cls, E5OnnxError):
            try:
                return cls(found.group(2))
            except TypeError:
                return E5OnnxError(found.group(2))
    first = str(exc).strip().splitlines()
    return E5OnnxError(f"the Ray job failed: {type(exc).__name__}: {first[-1] if first else exc}")
