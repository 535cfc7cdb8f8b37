"""Corpus records as pyarrow tables on Ray: one row per record (:func:`records_table`), and one row per window
(:func:`grouped`: each column a list of the window's values), so that Ray, which re-blocks and re-batches rows
freely, cannot change which records are embedded together."""

import dataclasses

import numpy as np

from ..corpus.records import Record, Window
from ..runtime.texts import text_problem
from ._ray import pyarrow as pa

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


def grouped(table):
    """``table`` as one row: every column a list of its ``num_rows`` values (``list<...>``)."""
    offsets = pa.array([0, table.num_rows], pa.int32())
    return pa.Table.from_arrays([pa.ListArray.from_arrays(offsets, c.combine_chunks()) for c in table.columns],
                                names=table.column_names)


def ungrouped(row):
    """The flat table of one :func:`grouped` row (a one-row table): each list column back to its values."""
    return pa.Table.from_arrays([c.combine_chunks().flatten() for c in row.columns], names=row.column_names)


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
