"""The Ray side: ``E5Embedder`` (a ``map_batches`` callable class), ``actor_plan`` and ``ray_windows`` (the corpus
job's Ray backend) against the in-process Embedder and ``local_windows``.

All on the tiny exported BERT (``tiny_export``, fp32) and one local Ray of 2 CPUs for the session (``ray_local``).
A watchdog (``faulthandler``) ends the run with every thread's traceback if a test hangs.
"""

import faulthandler
import gc
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'e5onnx[ray]'")

from e5onnx.config import shared_dir
from e5onnx.corpus.local import local_windows
from e5onnx.corpus.sources import open_source
from e5onnx.errors import E5OnnxError, InvalidInputError, ModelFolderError
from e5onnx.ray import ActorPlan, E5Embedder, actor_plan, connect, ray_windows
from e5onnx.ray.embedder import threads_for
from e5onnx.ray.plan import ACTOR_MEMORY
from e5onnx.ray.records import checked, records_table, table_records
from e5onnx.ray.windows import embedded_dataset
from e5onnx.runtime import Embedder

SCIFACT = shared_dir() / "data" / "scifact" / "corpus.part1.jsonl"
#: Seconds any one test may take before the watchdog dumps the tracebacks and ends pytest.
WATCHDOG_S = 120
TEXTS = ["what is the capital of france", "paris is the capital city of france", "hello world",
         "how much protein should a female eat", "a", "cafe creme brulee " * 20, "robots emoji long text",
         "define summit"]


@pytest.fixture(autouse=True)
def _watchdog():
    # pytest's log capture keeps Ray Data's error records of a failed dataset (with the exception, its traceback
    # and so the executor's actor handles, which sit in reference cycles) until the test ends: collect them, so a
    # failed dataset's actors do not keep their CPUs from the next test.
    gc.collect()
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def fp32(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


def _table(texts, **extra):
    return pa.table({"id": [str(i) for i in range(len(texts))], "text": pa.array(texts, pa.string()), **extra})


def _vectors(table, column="embedding"):
    arr = table.column(column).combine_chunks()
    return np.asarray(arr.flatten().to_numpy(), dtype=np.float32).reshape(-1, arr.type.list_size)


# --- E5Embedder, called directly (no Ray needed) ---------------------------------------------------------------

def test_e5embedder_equals_embed_passages_whatever_the_batch(tiny_export, fp32):
    udf = E5Embedder(tiny_export, variant="fp32", threads=1, tokens_column="tokens")
    expected = fp32.embed_passages(TEXTS)
    whole = udf(_table(TEXTS))
    assert whole.column_names == ["id", "text", "embedding", "tokens"]
    assert whole.schema.field("embedding").type == pa.list_(pa.float32(), fp32.dim)
    assert whole.schema.field("tokens").type == pa.int32()
    np.testing.assert_allclose(_vectors(whole), expected, rtol=0, atol=1e-6)
    assert whole.column("tokens").to_pylist() == fp32.prepare(TEXTS, "passage").token_counts.tolist()
    for size in (1, 3):  # the same rows in other batches (and forward passes) give the same vectors
        parts = [udf(_table(TEXTS[i:i + size])) for i in range(0, len(TEXTS), size)]
        np.testing.assert_allclose(np.concatenate([_vectors(p) for p in parts]), expected, rtol=0, atol=1e-6)
    small = E5Embedder(tiny_export, variant="fp32", threads=1, batch_size=2)
    np.testing.assert_allclose(_vectors(small(_table(TEXTS))), expected, rtol=0, atol=1e-6)


def test_e5embedder_kinds_and_columns(tiny_export, fp32):
    udf = E5Embedder(tiny_export, variant="fp32", threads=1, kind=None, text_column="body", embedding_column="v")
    out = udf(pa.table({"body": TEXTS[:3]}))
    assert out.column_names == ["body", "v"]
    np.testing.assert_allclose(_vectors(out, "v"), fp32.embed(TEXTS[:3]), rtol=0, atol=1e-6)
    query = E5Embedder(tiny_export, variant="fp32", threads=1, kind="query")
    np.testing.assert_allclose(_vectors(query(_table(TEXTS[:3]))), fp32.embed_queries(TEXTS[:3]), rtol=0, atol=1e-6)


def test_e5embedder_null_text_passes_through(tiny_export, fp32):
    udf = E5Embedder(tiny_export, variant="fp32", threads=1, tokens_column="tokens")
    texts = [None, TEXTS[0], None, TEXTS[1]]
    batch = _table(texts, error=["bad row", None, "empty text", None])
    out = udf(batch)
    assert out.select(["id", "text", "error"]).equals(batch)
    assert out.column("embedding").null_count == 2 and out.column("tokens").to_pylist()[::2] == [None, None]
    rows = out.column("embedding").to_pylist()
    assert rows[0] is None and rows[2] is None
    np.testing.assert_allclose(np.array([rows[1], rows[3]], np.float32), fp32.embed_passages(TEXTS[:2]), atol=1e-6)
    every = udf(_table([None, None], error=["x", "y"]))  # a batch of bad rows only
    assert every.column("embedding").null_count == 2 and every.num_rows == 2


def test_e5embedder_refuses_unusable_input_naming_the_row(tiny_export):
    strict = E5Embedder(tiny_export, variant="fp32", threads=1, truncate=False)
    batch = pa.table({"where": ["a.jsonl line 1", "a.jsonl line 2"], "text": ["short", "long " * 500]})
    with pytest.raises(InvalidInputError, match=r"text\[1\] of this batch \(where 'a.jsonl line 2'\): .*tokens"):
        strict(batch)
    udf = E5Embedder(tiny_export, variant="fp32", threads=1)
    with pytest.raises(InvalidInputError, match="no column 'text'"):
        udf(pa.table({"body": ["x"]}))
    with pytest.raises(InvalidInputError, match="must hold strings, got int64"):
        udf(pa.table({"text": [1, 2]}))
    with pytest.raises(InvalidInputError, match="already has a column 'embedding'"):
        udf(pa.table({"text": ["x"], "embedding": [1]}))
    with pytest.raises(InvalidInputError, match="kind"):
        E5Embedder(tiny_export, kind="document")


def test_threads_for_assigned_cpus():
    assert [threads_for(c) for c in (0, 0.25, 1, 1.5, 1.999999999999, 2)] == [1, 1, 1, 1, 2, min(2, os.cpu_count())]
    assert threads_for(10_000) == os.cpu_count()  # never more than this machine's CPUs (the Embedder's limit)


def test_actor_plan_rule():
    gib = 2**30
    plan = actor_plan([{"CPU": 2.0, "memory": 16 * gib}])  # this machine: one 1-thread actor per CPU
    assert isinstance(plan, ActorPlan) and plan == (2, 1.0, 1, ACTOR_MEMORY)
    assert actor_plan([2.0, 2.0]).size == 4
    assert actor_plan([{"CPU": 8.0, "memory": 2 * gib}]).size == 2  # memory caps the actors of a node
    assert actor_plan([{"CPU": 4.0}, {"CPU": 0.0}, {"CPU": 2.0, "memory": 0.1 * gib}]).size == 4  # unusable nodes
    assert actor_plan([2.0, 8.0], threads=2) == (5, 2.0, 2, ACTOR_MEMORY)
    assert actor_plan([2.0], threads=4)[:3] == (1, 2.0, 4)  # reserves what the node has, runs 4 threads
    assert actor_plan([2.5], actor_memory=None) == (2, 1.0, 1, None)
    with pytest.raises(E5OnnxError, match="no node with a whole CPU"):
        actor_plan([0.5, {"CPU": 0}])
    with pytest.raises(InvalidInputError, match="threads"):
        actor_plan([2.0], threads=0)


def test_actor_plan_spare_cpus_are_left_out_of_every_node():
    assert actor_plan([3.0, {"CPU": 9.0}], spare_cpus=1, actor_memory=None) == ActorPlan(10, 1.0, 1, None)
    with pytest.raises(E5OnnxError, match="no node with a whole CPU"):
        actor_plan([1.0], spare_cpus=1)
    with pytest.raises(InvalidInputError, match="spare_cpus"):
        actor_plan([2.0], spare_cpus=-1)


# --- on Ray ------------------------------------------------------------------------------------------------

def test_map_batches_on_ray_equals_in_process(ray_local, tiny_export, fp32):
    texts = TEXTS * 5 + [None]
    ds = ray.data.from_arrow(_table(texts)).map_batches(
        E5Embedder, fn_constructor_kwargs={"model": str(tiny_export), "variant": "fp32", "tokens_column": "tokens"},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=7, batch_format="pyarrow")
    out = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
    out = out.take(np.argsort([int(i) for i in out.column("id").to_pylist()]))  # no preserve_order here
    assert out.column("text").to_pylist() == texts
    rows = out.column("embedding").to_pylist()
    assert rows[-1] is None
    np.testing.assert_allclose(np.array(rows[:-1], np.float32), fp32.embed_passages(texts[:-1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_cpus, threads", [(1, 1), (2, 2), (0.5, 1)])
def test_threads_come_from_the_assigned_cpus(ray_local, tiny_export, num_cpus, threads):
    actor = ray.remote(num_cpus=num_cpus)(E5Embedder).remote(str(tiny_export), variant="fp32")
    try:
        assert ray.get(actor.__ray_call__.remote(lambda self: self.threads), timeout=60) == threads
    finally:
        ray.kill(actor)


def _scifact_with_bad_rows(folder, count):
    """``count`` SciFact passages (or generated ones without ../shared) with bad rows among them: not JSON, an
    empty text, a lone surrogate (the Embedder refuses it), a missing field."""
    if SCIFACT.is_file():
        with SCIFACT.open(encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line, _ in zip(f, range(count))]
    else:
        words = ["cell", "protein", "gene", "expression", "tumour", "patients", "study", "risk", "cohort", "dose"]
        rng = np.random.default_rng(0)
        lines = [json.dumps({"_id": str(i), "title": f"title {i}",
                             "text": " ".join(rng.choice(words, int(rng.integers(5, 150))))}) for i in range(count)]
    bad = ['{"_id": "x1", "title": "t", "text": "', '{"_id": "x2", "title": "", "text": ""}',
           '{"_id": "x3", "title": "lone", "text": "a \\ud800 b"}', '{"_id": "x4", "title": "no text field"}',
           '{"_id": "x5", "text": "kept field has a lone surrogate", "n": "\\udc80"}']
    lines = [line[:-1] + f', "n": {i}}}' if i % 3 else line for i, line in enumerate(lines)]  # a kept field, not always
    for k, line in enumerate(bad):
        lines.insert(100 + 97 * k, line)
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return open_source([str(path)], "jsonl", "text", "title", "_id", keep=("n",))


def _same_windows(got, expected, atol=1e-6):
    assert [len(w.records) for w in got] == [len(w.records) for w in expected]
    for a, b in zip(got, expected):
        assert a.records == b.records
        assert a.token_counts.dtype == np.int64 and np.array_equal(a.token_counts, b.token_counts)
        assert a.vectors.dtype == np.float32 and a.vectors.shape == b.vectors.shape
        np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=atol)


def test_ray_windows_equal_local_windows(ray_local, tmp_path, tiny_export, fp32):
    source = _scifact_with_bad_rows(tmp_path, 1200)
    records = list(source.records())
    assert len(records) == 1205 and sum(not r.ok for r in records) >= 5
    got = list(ray_windows(source, 0, str(tiny_export), "fp32", "passage", 500, shard_rows=600))
    assert ray.is_initialized()  # the caller's Ray is left running
    expected = list(local_windows(fp32, source.records(), 500, "passage", 32, 600))
    _same_windows(got, expected)
    assert [len(w.records) for w in got] == [500, 100, 500, 100, 5]  # windows end at every shard end
    assert [r.id for w in got for r in w.records] == [r.id for r in records]
    refused = {r.id: r for w in got for r in w.records if r.id in ("x3", "x5")}
    assert refused["x3"].text is None and "lone surrogate" in refused["x3"].error
    assert refused["x5"].keep == {"n": "\udc80"} and not refused["x5"].ok


def test_ray_windows_resume_from_a_record(ray_local, tmp_path, tiny_export, fp32):
    source = _scifact_with_bad_rows(tmp_path, 300)
    got = list(ray_windows(source, 250, str(tiny_export), "fp32", "query", 16, plan=ActorPlan(2, 0.5, 1, None)))
    expected = list(local_windows(fp32, source.records(250), 16, "query", 32))
    _same_windows(got, expected)
    assert got[0].records[0].ordinal == 250  # windows end every 16 records counted from record 0, as uninterrupted
    assert [len(w.records) for w in got] == [6, 16, 16, 16, 1]


def test_ray_windows_int8_are_bitwise_the_local_ones(ray_local, tmp_path, tiny_export):
    """The same texts embedded together on 1-thread actors as in process on 2 threads: int8 vectors (which move
    by up to ~6e-4 when a text's batch-mates change, bf16 likewise) are identical, bit for bit."""
    source = _scifact_with_bad_rows(tmp_path, 400)
    int8 = Embedder.load(tiny_export, variant="int8", threads=2)
    got = list(ray_windows(source, 100, str(tiny_export), "int8", "passage", 64, shard_rows=150))
    _same_windows(got, list(local_windows(int8, source.records(100), 64, "passage", 32, 150)), atol=0)


@pytest.mark.skipif(not SCIFACT.is_file(), reason=f"{SCIFACT} is absent (no ../shared): SciFact corpus needed")
def test_ray_windows_over_scifact(ray_local, tiny_export, fp32):
    source = open_source([str(SCIFACT)], "jsonl", "text", "title", "_id")
    got = list(ray_windows(source, 0, str(tiny_export), "fp32", "passage", 1024))
    expected = list(local_windows(fp32, source.records(), 1024, "passage", 32))
    assert sum(len(w.records) for w in got) >= 1000
    _same_windows(got, expected)


def test_ray_task_error_is_an_e5onnx_error(ray_local, tiny_export):
    table = records_table([checked(r) for r in _fake_records(["fine", "long " * 500])])
    ds = ray.data.from_arrow(table).map_batches(
        E5Embedder, fn_constructor_kwargs={"model": str(tiny_export), "variant": "fp32", "truncate": False},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_format="pyarrow")
    from e5onnx.ray.windows import _batches

    with pytest.raises(InvalidInputError, match=r"text\[1\] of this batch \(where 'f line 2'\)"):
        list(_batches(ds))
    with pytest.raises(ModelFolderError, match="no such folder"):
        list(_batches(ray.data.from_arrow(table).map_batches(
            E5Embedder, fn_constructor_kwargs={"model": str(tiny_export / "nowhere")},
            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_format="pyarrow")))


def _fake_records(texts):
    from e5onnx.corpus.records import Record

    return [Record(i, f"f line {i + 1}", str(i + 1), t) for i, t in enumerate(texts)]


def test_records_table_round_trip():
    from e5onnx.corpus.records import Record

    records = [Record(0, "a line 1", "1", "text", None, {"url": "u", "n": None}),
               Record(1, "a line 2", "2", None, "not JSON (Expecting value)", {"url": None, "n": None}),
               checked(Record(2, "a line 3", "3", "bad \ud800", None, {"url": "v", "n": "3"}))]
    assert records[2].text is None and "lone surrogate" in records[2].error
    records.append(Record(3, "a line 4", "4", None, "field 'n': lone surrogate", {"url": None, "n": "\udc80"}))
    table = records_table(records, ("url", "n"))
    assert table.column_names == ["ordinal", "where", "id", "text", "error", "keep.url", "keep.n"]
    assert table_records(table, ("url", "n")) == records


def test_embedded_dataset_keeps_order_and_the_callers_context(ray_local, tmp_path, tiny_export):
    source = _scifact_with_bad_rows(tmp_path, 10)
    ds = embedded_dataset(source, 0, str(tiny_export), "fp32", "passage", ActorPlan(1, 2.0, 2), window_rows=4)
    assert ds.context.execution_options.preserve_order
    assert not ray.data.DataContext.get_current().execution_options.preserve_order  # the caller's is unchanged
    rows = ds.take_all()  # one row per window of 4 records: 15 records
    assert [list(row["ordinal"]) for row in rows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]


# --- connecting -----------------------------------------------------------------------------------------------

def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, message", [
    (f"127.0.0.1:{_closed_port()}", "cannot reach a Ray cluster"),
    ("ray://127.0.0.1:1", "cannot reach a Ray cluster"),
    ("no-such-host.invalid:6379", "cannot reach a Ray cluster"),
    ("not an address", "is not host:port"),
])
def test_a_bad_address_errors_quickly(tmp_path, tiny_export, address, message):
    source = _scifact_with_bad_rows(tmp_path, 5)
    started = time.perf_counter()
    with pytest.raises(E5OnnxError, match=message):
        ray_windows(source, 0, str(tiny_export), "fp32", "passage", 10, address=address)
    assert time.perf_counter() - started < 10


def test_a_listening_non_ray_port_errors_quickly():
    """Ray retries a port that accepts connections but is no Ray for minutes: the gRPC probe refuses it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.perf_counter()
        with pytest.raises(E5OnnxError, match="accepts connections but is not a Ray head node"):
            connect(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=2)
        assert time.perf_counter() - started < 5


def test_the_probe_accepts_a_real_ray_head(ray_local):
    from e5onnx.ray.connect import _probe

    _probe(ray.get_runtime_context().gcs_address, 5)  # the session's GCS answers gRPC


def test_connect_reuses_the_callers_ray(ray_local):
    assert connect() is False and ray.is_initialized()


def test_standard_input_is_refused(tiny_export):
    with pytest.raises(InvalidInputError, match="standard input"):
        ray_windows(open_source("-"), 0, str(tiny_export), "fp32", "passage", 10)


def test_without_ray_the_error_says_what_to_install():
    code = ("import sys; sys.modules['ray'] = None\n"
            "try:\n"
            "    import e5onnx.ray\n"
            "except ImportError as exc:\n"
            "    from e5onnx.errors import E5OnnxError\n"
            "    print(isinstance(exc, E5OnnxError), exc)\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("True") and "pip install 'e5onnx[ray]'" in out, out


def test_the_readmes_map_batches_snippet_runs(ray_local, tmp_path, tiny_export, fp32):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("```python\nimport os\nimport ray\nfrom e5onnx.ray import E5Embedder")
    code = readme[start + len("```python\n"):readme.index("```", start + 3)]
    (tmp_path / "docs").mkdir()
    import pyarrow.parquet as pq

    pq.write_table(_table(TEXTS), tmp_path / "docs" / "part-0.parquet")
    for old, new in (("ray.init(num_cpus=os.cpu_count() + 1)\n", ""), ('"docs/"', repr(str(tmp_path / "docs"))),
                     ('"models/main"', repr(str(tiny_export))), ("print(", "shown = (")):
        assert old in code, old
        code = code.replace(old, new)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own snippet
    assert scope["shown"] == fp32.dim
    table = pa.concat_tables(ray.get(scope["ds"].to_arrow_refs())).sort_by("id")
    order = [int(i) for i in table.column("id").to_pylist()]
    auto = Embedder.load(tiny_export)  # the snippet's variant ("auto"), the same 8 texts in one forward pass
    np.testing.assert_allclose(_vectors(table), auto.embed_passages(TEXTS)[order], rtol=0, atol=1e-6)


def _scifact_or_generated(tmp_path, n=1200):
    """SciFact's ``corpus.part1.jsonl`` (1,728 documents) when ../shared is present, else ``n`` generated BEIR rows."""
    if SCIFACT.is_file():
        return SCIFACT
    rng = np.random.default_rng(0)
    words = TEXTS[3].split() + TEXTS[1].split()
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": " ".join(rng.choice(words, 40))})
                            + "\n" for i in range(n)), encoding="utf-8")
    return path


def test_the_corpus_job_on_ray_equals_the_single_process_job(ray_local, tmp_path, tiny_export):
    """``e5onnx corpus --ray`` (the CLI, on the session's Ray) against ``embed_corpus`` in this process (2 threads),
    int8: the same shards, byte for byte (so the same ids, order and vectors), and the same run manifest but for
    the backend and the timings."""
    from e5onnx.cli import main
    from e5onnx.corpus import embed_corpus

    src = _scifact_or_generated(tmp_path)
    common = ["--id-field", "_id", "--title-field", "title", "--variant", "int8", "--shard-rows", "700", "--quiet"]
    assert main(["corpus", str(tiny_export), "--input", str(src), "--output", str(tmp_path / "ray"), "--ray",
                 *common]) == 0
    assert ray.is_initialized()  # the session's Ray was used and left running
    local = embed_corpus(str(tiny_export), [str(src)], tmp_path / "local", id_field="_id", title_field="title",
                         variant="int8", shard_rows=700, quiet=True, threads=2)
    on_ray = json.loads((tmp_path / "ray" / "_e5onnx_run.json").read_text())
    assert local["rows_written"] == on_ray["rows_written"] >= 1000 and on_ray["rows_skipped"] == 0
    assert [s["sha256"] for s in on_ray["shards"]] == [s["sha256"] for s in local["shards"]]
    assert (on_ray["backend"], local["backend"]) == ("ray", "local")
    timing = {"backend", "started_at", "finished_at", "wall_time_s", "tokens_per_s"}
    assert {k: v for k, v in on_ray.items() if k not in timing} == {k: v for k, v in local.items() if k not in timing}
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "ray")
    ids = [json.loads(line)["_id"] for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert table.column("id").to_pylist() == ids


def test_ray_rejects_name_the_input_as_given(ray_local, tmp_path, tiny_export, monkeypatch):
    """A Ray worker reads the input by its absolute path, but the rejects (and the manifest) name it as the user
    gave it, as one process does."""
    from e5onnx.corpus import embed_corpus

    monkeypatch.chdir(tmp_path)
    with open("c.jsonl", "w", encoding="utf-8") as f:
        f.write('{"_id": "a", "text": "fine"}\nnot json\n{"_id": "c", "text": "also fine"}\n')
    runs = {side: embed_corpus(str(tiny_export), ["c.jsonl"], side, id_field="_id", on_error="skip", quiet=True,
                               variant="fp32", ray=side == "ray") for side in ("ray", "local")}
    assert [s["rejects"] for s in runs["ray"]["shards"]] == [s["rejects"] for s in runs["local"]["shards"]]
    assert runs["ray"]["shards"][0]["rejects"][0]["where"] == "c.jsonl line 2"
