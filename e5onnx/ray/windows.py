"""The Ray backend of a corpus job: :func:`ray_windows` gives the same :class:`~e5onnx.corpus.records.Window` s as
the in-process backend (:func:`e5onnx.corpus.local.local_windows`), embedded by a pool of Ray actors.

Pipeline: :class:`RecordsDatasource` (one read task streaming ``source.records(start)`` as pyarrow blocks, on the
driver's node, ``num_cpus=0``) → ``map_batches(E5Embedder, compute=ActorPoolStrategy(size=...), num_cpus=...)``
(:func:`~e5onnx.ray.plan.actor_plan`: one single-threaded actor per CPU) → ``iter_batches`` in the driver, in
input order (``preserve_order``) → windows of ``window_rows`` consecutive records.

Resources: the read task asks for no CPU, so the actors can reserve every CPU of a node without leaving the read
unscheduled (with a default read task of 1 CPU and two 1-CPU actors on 2 CPUs the job hung, "backpressured:
ResourceBudget"); reading is ~1000x cheaper than embedding, so it steals nothing measurable. The read task is not
fused into the actors (different remote args), and ``override_num_blocks=1`` keeps Ray from splitting its blocks.

Model folder and input files must be at the same paths on the nodes that use them (the actors' nodes and the
driver's node respectively); Ray Client (``ray://``) is refused by Ray Data for driver-local reads.
"""

import copy
import dataclasses
import functools
import gc
import os
import re
import socket
import threading
from contextlib import contextmanager
from urllib.parse import urlsplit

import numpy as np

from .. import errors
from ..corpus.records import Record, Window
from ..errors import E5OnnxError, InvalidInputError
from ..runtime.arguments import whole_number
from ..runtime.cpu import available_cpus
from ..runtime.texts import text_problem
from ._ray import pyarrow as pa
from ._ray import ray
from .embedder import E5Embedder
from .plan import actor_plan, check_plan, node_resources

#: Most records per ``E5Embedder`` call, and fewest per actor task (``map_batches(batch_size=...)``): big enough
#: that Ray's per-task overhead is noise next to ~10 s of embedding and a call's length-sorted passes pad little,
#: small enough that the actors of a pool share a 1,000-record input and its last task is short. all-MiniLM-L6-v2
#: int8 (models/main), SciFact part 1, 2 actors x 1 thread, medians of 2 (in process 26.7 s): 256 rows / 512 KiB
#: blocks 28.5 s, 128 / 256 KiB 27.3 s, 64 / 128 KiB 29.8 s, within this machine's noise (+-10 %).
RAY_BATCH_ROWS = 256
#: Ray Data's ``target_max_block_size`` for the job's dataset (default 128 MiB). Ray coalesces a task's output
#: blocks up to it, so with the default the single read task would hand the whole input (up to 128 MiB, ~80,000
#: passages) to one actor as one task: no streaming, no sharing among actors. With 512 KiB a read block holds
#: ~330 SciFact passages (one actor task) and a task's output (vectors + record columns, ~1 MB) is 2 blocks: a task
#: yielding more blocks than Ray's streaming-generator buffer (2) waits ~0.1 s for the driver per extra block
#: (measured: 128 KiB cost ~0.45 s between 10 s tasks).
RAY_BLOCK_BYTES = 512 * 1024
#: Seconds :func:`connect` waits for ``ray.init(address=...)`` before giving up (Ray itself retries a
#: listening non-Ray port for minutes).
RAY_CONNECT_TIMEOUT_S = 60.0
#: Seconds the TCP check of a ``host:port`` address may take (an unreachable host fails here at once).
RAY_PROBE_TIMEOUT_S = 5.0
#: Prefix of the ``--keep`` columns in the Ray dataset (``keep.url``), so a kept field named ``text`` or ``id``
#: cannot collide with the record's own columns.
KEEP_PREFIX = "keep."
#: Columns of every block, before the keep columns.
RECORD_COLUMNS = (("ordinal", "int64"), ("where", "string"), ("id", "string"), ("text", "string"),
                  ("error", "string"))


def record_schema(keep=()):
    """The pyarrow schema of :class:`RecordsDatasource`'s blocks: ``ordinal`` int64, ``where``, ``id``, ``text``
    (null for a bad record), ``error`` (null for a good one) as strings, then ``keep.<name>`` per kept field as
    binary: the value's UTF-8 with lone surrogates passed through (``"surrogatepass"``), so that a bad row whose
    kept field holds one (from a JSON ``\\ud800`` escape) travels exactly as well (Arrow strings must be UTF-8)."""
    fields = [pa.field(name, getattr(pa, kind)()) for name, kind in RECORD_COLUMNS]
    return pa.schema(fields + [pa.field(KEEP_PREFIX + name, pa.binary()) for name in keep])


def checked(record):
    """``record``, or a copy made bad (``text=None``, ``error`` = the Embedder's reason) when the Embedder would
    refuse its text (not a str, a lone surrogate from a JSON ``\\ud800`` escape): what
    :func:`~e5onnx.corpus.local.prepare_window` does in process. Such a text could not be put in Arrow anyway."""
    if not record.ok:
        return record if record.text is None else dataclasses.replace(record, text=None)
    reason = text_problem(record.text)
    return dataclasses.replace(record, text=None, error=reason) if reason else record


def records_table(records, keep=()):
    """``records`` (:class:`~e5onnx.corpus.records.Record`, already :func:`checked`) as a pyarrow Table of
    :func:`record_schema`."""
    columns = [[r.ordinal for r in records], [r.where for r in records], [r.id for r in records],
               [r.text for r in records], [r.error for r in records]]
    columns += [[_encoded(r.keep.get(name)) for r in records] for name in keep]
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, record_schema(keep))],
                                schema=record_schema(keep))


def _encoded(value):
    return None if value is None else str(value).encode("utf-8", "surrogatepass")


def table_records(table, keep=()):
    """The :class:`~e5onnx.corpus.records.Record` s of a :func:`records_table` table (``keep`` holds every kept
    name, with None for a missing value, as the writer reads it: ``record.keep.get(name)``)."""
    cols = [table.column(name).to_pylist() for name, _ in RECORD_COLUMNS]
    kept = [[None if v is None else v.decode("utf-8", "surrogatepass")
             for v in table.column(KEEP_PREFIX + name).to_pylist()] for name in keep]
    return [Record(ordinal, where, id_, text, error, {name: kept[k][i] for k, name in enumerate(keep)})
            for i, (ordinal, where, id_, text, error) in enumerate(zip(*cols))]


def _read_blocks(source, start, keep, block_rows):
    """The read task: ``source.records(start)`` in blocks of ``block_rows`` records (a generator: Ray streams
    each block out as it is made)."""
    chunk = []
    for record in source.records(start):
        chunk.append(checked(record))
        if len(chunk) == block_rows:
            yield records_table(chunk, keep)
            chunk = []
    if chunk:
        yield records_table(chunk, keep)


class RecordsDatasource(ray.data.Datasource):
    """A Ray Data source of a corpus job's records, in input order, as pyarrow blocks of :func:`record_schema`.

    One read task streams ``source.records(start)``: reading and parsing a line takes microseconds while
    embedding it takes milliseconds (~1000x), so a single reader keeps any actor pool fed, and one task keeps the
    input order without splitting files. The task runs on the driver's node (``supports_distributed_reads`` is
    False), where the input files are.

    Args:
        source: a picklable source with ``records(start) -> Iterator[Record]`` and ``keep`` (the kept field
            names), e.g. :func:`e5onnx.corpus.sources.open_source`'s.
        start: records to skip (a resumed job's first ordinal).
        block_rows: records per block.
    """

    def __init__(self, source, start=0, block_rows=RAY_BATCH_ROWS):
        super().__init__()
        self.source, self.start = source, whole_number("start", start, 0)
        self.keep = tuple(getattr(source, "keep", ()) or ())
        self.block_rows = whole_number("block_rows", block_rows)

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
        read = functools.partial(_read_blocks, self.source, self.start, self.keep, self.block_rows)
        return [ReadTask(read, metadata, schema=record_schema(self.keep), per_task_row_limit=per_task_row_limit)]


#: What an HTTP/2 client sends first (RFC 9113 §3.4), then an empty SETTINGS frame: a gRPC server (Ray's GCS and
#: its client server are gRPC) answers with its own SETTINGS frame (type 4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _probe(address, timeout_s):
    """Fail fast on an address that is not a Ray head node: malformed, nobody listening, or a listener that does
    not speak gRPC (``ray.init`` retries those for minutes). Skipped for ``"auto"``/``"local"`` and with
    ``RAY_USE_TLS`` (the handshake is then TLS first)."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise E5OnnxError(f"Ray address {address!r} is not host:port, ray://host:port or 'auto'")
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise E5OnnxError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc} (is the head node "
                          "running? `ray start --head` prints its address)") from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        head = b""
        try:
            sock.sendall(_H2_PREFACE)
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
    if len(head) < 9 or head[3] != 4:
        raise E5OnnxError(f"{address!r} accepts connections but is not a Ray head node (no gRPC answer within "
                          f"{timeout_s:g} s): give the address `ray start --head` printed, e.g. host:6379")


def connect(address=None, timeout_s=RAY_CONNECT_TIMEOUT_S):
    """Make sure this process is connected to Ray; returns True when this call connected (the caller then
    shuts Ray down when done), False when Ray was already initialised (the caller's: left running).

    Args:
        address: None: the cluster in ``$RAY_ADDRESS`` if set, else a new local Ray with this machine's CPUs
            (:func:`~e5onnx.runtime.cpu.available_cpus`, no dashboard); or ``"auto"``, ``"host:port"`` (a head
            node's GCS). An already initialised Ray is reused whatever ``address`` says (after ``address`` is
            checked).
        timeout_s: most seconds ``ray.init`` may take.

    Raises:
        E5OnnxError: the address is malformed or unreachable, or Ray did not connect within ``timeout_s``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        _probe(str(address), min(RAY_PROBE_TIMEOUT_S, timeout_s))
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False}
    if address is None:
        kwargs.update(address="local", num_cpus=available_cpus())
    else:
        kwargs["address"] = str(address)
    outcome = {}

    def init():
        try:
            ray.init(**kwargs)
            outcome["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - reported in the caller's thread
            outcome["error"] = exc

    where = "a local Ray" if address is None else f"Ray at {address!r}"
    if address is None or threading.current_thread() is threading.main_thread():
        # ray.init from another thread leaves the driver unable to reach its own GCS ("Failed to connect to GCS
        # within 60 seconds", then the process exits): tried with `e5onnx corpus --ray` on Ray 2.60. A remote
        # address was probed above, so the main thread is not left waiting on a dead one.
        init()
        thread = None
    else:
        thread = threading.Thread(target=init, name="e5onnx-ray-init", daemon=True)
        thread.start()
        thread.join(timeout_s)
    if thread is not None and thread.is_alive():
        raise E5OnnxError(f"could not connect to {where} within {timeout_s:g} s (is it a Ray head node's "
                          "address, e.g. host:6379?)")
    if "error" in outcome:
        exc = outcome["error"]
        raise E5OnnxError(f"could not connect to {where}: {type(exc).__name__}: {exc}") from exc
    return True


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


def embedded_dataset(source, start, model, variant, kind, plan, batch_rows=RAY_BATCH_ROWS, batch_size=32,
                     block_bytes=RAY_BLOCK_BYTES):
    """The job's lazy Dataset: :class:`RecordsDatasource` (read task ``num_cpus=0``) →
    ``map_batches(E5Embedder, ...)`` with the actor pool of ``plan`` (an :class:`~e5onnx.ray.plan.ActorPlan`),
    adding ``embedding`` and ``tokens``; input order preserved."""
    with _data_context(block_bytes):
        ds = ray.data.read_datasource(RecordsDatasource(source, start, batch_rows), num_cpus=0, override_num_blocks=1)
        return ds.map_batches(
            E5Embedder, batch_size=batch_rows, batch_format="pyarrow", zero_copy_batch=True,
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
            source = dataclasses.replace(source, paths=fixed)
    return source, os.fspath(model) if isinstance(model, os.PathLike) else model


def ray_windows(source, start, model, variant, kind, window_rows, address=None, threads=None, *,
                batch_rows=RAY_BATCH_ROWS, block_bytes=RAY_BLOCK_BYTES, plan=None):
    """Windows of ``window_rows`` consecutive records from ``source.records(start)``, embedded on Ray.

    The same Windows as the in-process backend (:func:`~e5onnx.corpus.local.local_windows`) for the same records:
    same records (a text the Embedder refuses becomes a bad record with its reason), same token counts, vectors
    within float rounding (fp32: 1e-6), whatever batch a record lands in on Ray.

    Connects first (:func:`connect`), so a bad address raises here, not on the first ``next()``; Ray is shut
    down when the iterator is exhausted or closed only if this call started or connected it.

    Args:
        source: as :class:`RecordsDatasource` (picklable; its files readable on the driver's node). Standard
            input (``paths == ("-",)``) cannot be read by a Ray worker and is refused.
        start: records to skip (resume).
        model: the exported model folder, at the same path on every node.
        variant: the variant to run (pass the driver's resolved variant, not ``"auto"``, on mixed CPUs).
        kind: ``"passage"``, ``"query"`` or None.
        window_rows: records per Window (the last one shorter).
        address: see :func:`connect`.
        threads: onnxruntime threads per actor (default: :func:`~e5onnx.ray.plan.actor_plan`'s).
        batch_rows: most records per ``E5Embedder`` call (and fewest per actor task).
        block_bytes: Ray Data's target block size for the job (:data:`RAY_BLOCK_BYTES`).
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
        dataset = embedded_dataset(source, start, model, variant, kind, plan, batch_rows, block_bytes=block_bytes)
    except BaseException as exc:
        if owned:
            ray.shutdown()
        if isinstance(exc, Exception) and not isinstance(exc, E5OnnxError):
            raise E5OnnxError(f"could not set up the Ray job: {type(exc).__name__}: {exc}") from exc
        raise
    return _windows(dataset, tuple(getattr(source, "keep", ()) or ()), window_rows, owned)


def _windows(dataset, keep, window_rows, owned):
    """Re-chunk the dataset's batches into Windows of ``window_rows`` records."""
    pending = []  # tables not yet emitted, in order
    rows = 0
    batches = _batches(dataset)
    del dataset  # only _batches holds it (see there)
    try:
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            while rows >= window_rows:
                table = pa.concat_tables(pending)
                yield window_of(table.slice(0, window_rows), keep)
                rest = table.slice(window_rows)
                pending, rows = ([rest] if rest.num_rows else []), rest.num_rows
        if rows:
            yield window_of(pa.concat_tables(pending), keep)
    finally:
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


def window_of(table, keep=()):
    """A :class:`~e5onnx.corpus.records.Window` of an embedded table (:func:`record_schema` + ``embedding``,
    ``tokens``): the records, the good rows' vectors and token counts."""
    records = table_records(table, keep)
    good = pa.array([r.text is not None for r in records], type=pa.bool_())
    embedding = table.column("embedding").combine_chunks().filter(good)
    dim = embedding.type.list_size
    vectors = np.array(embedding.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    tokens = table.column("tokens").combine_chunks().filter(good).to_numpy(zero_copy_only=False).astype(np.int64)
    return Window(records, vectors, tokens)
