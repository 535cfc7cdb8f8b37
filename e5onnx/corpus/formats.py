"""The readers of a corpus job's input formats: a file's lines or rows, as field values, to records.

The rules (what a record, its ``where``, ``id``, ``text`` and ``keep`` are, and every bad-row reason) are stated
in :mod:`e5onnx.corpus.sources`, the public side, whose :meth:`Source.make_record
<e5onnx.corpus.sources.Source.make_record>` turns the values of a row into a record.

Each reader, ``READERS[format](source, path, first, skip)``, is a generator over one file: it yields that file's
records, ``first`` being the ordinal of the file's first record, after passing over the file's first ``skip``
records cheaply (not decoded or parsed: only counted), and it returns (as the value of ``yield from``) the number
of records the file holds, the skipped ones included. Files are opened inside the generator and closed when it
ends or is closed; ``"-"`` is standard input, which is never closed.
"""

import contextlib
import csv
import functools
import io
import json
import sys
from pathlib import Path

from ..errors import InvalidInputError
from ..textfile import DuplicateKeyError, unique_keys

#: File suffix (any case) -> format.
SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "txt", ".parquet": "parquet"}
FORMATS = tuple(SUFFIXES.values())
BOM = b"\xef\xbb\xbf"
#: Rows per Arrow batch read from a Parquet file (only the needed columns are read).
PARQUET_BATCH_ROWS = 1024
#: The csv module's field size limit is raised to this many characters (its default, 131,072, is below the
#: length of some real documents). The limit is process-wide: the csv module has no per-reader limit.
CSV_FIELD_LIMIT = 1 << 24


def display(path):
    """How ``path`` is named in a record's ``where``: the path as given, ``"<stdin>"`` for ``"-"``."""
    return "<stdin>" if path == "-" else str(path)


def parquet_module():
    """``pyarrow.parquet``, imported on first use. Raises InvalidInputError when pyarrow is not installed."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("reading Parquet needs pyarrow: pip install 'e5onnx[corpus]'") from None
    return pq


def format_of(paths, fmt):
    """The format of ``paths``: ``fmt`` (checked, lower-cased), else the one their suffixes name, ``txt`` for
    ``("-",)``. Raises InvalidInputError as :func:`~e5onnx.corpus.sources.open_source` says."""
    if fmt is not None:
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            raise InvalidInputError(f"--format {fmt!r}: unknown, expected one of {', '.join(FORMATS)}")
        fmt = fmt.lower()
        if fmt == "parquet" and paths == ("-",):
            raise InvalidInputError("--format parquet: Parquet cannot be read from standard input "
                                    "(--input '-'); give the file's path")
        return fmt
    if paths == ("-",):
        return "txt"
    found = {}
    for path in paths:
        kind = SUFFIXES.get(Path(path).suffix.lower())
        if kind is None:
            raise InvalidInputError(f"--input {path!r}: cannot tell the format from the name; give --format "
                                    f"({', '.join(FORMATS)})")
        found.setdefault(kind, path)
    if len(found) > 1:
        listed = ", ".join(f"{p!r} is {k}" for k, p in found.items())
        raise InvalidInputError(f"--input: the paths are of different formats ({listed}); give files of one format")
    return next(iter(found))


def column_index(columns, path, source):
    """``{name: position}`` of the needed columns among a file's ``columns`` (a csv header or Parquet schema).

    Raises:
        InvalidInputError: ``columns`` is None (a csv file without even a header row), a needed column is absent
            (the message lists the file's columns) or appears more than once.
    """
    if columns is None:
        raise InvalidInputError(f"--input {source.name_of(path)!r}: the file is empty (no header row)")
    needed = source.columns()
    missing = [f"{name!r} ({flag})" for name, flag in needed if name not in columns]
    if missing:
        raise InvalidInputError(f"--input {source.name_of(path)!r}: no column {', '.join(missing)}; "
                                f"its columns are {', '.join(map(repr, columns)) or 'none'}")
    for name, flag in needed:
        if columns.count(name) > 1:
            raise InvalidInputError(f"--input {source.name_of(path)!r}: the column {name!r} ({flag}) appears "
                                    f"{columns.count(name)} times")
    return {name: columns.index(name) for name, _ in needed}


# --- JSON lines and plain text ------------------------------------------------------------------------------

@contextlib.contextmanager
def _open(path, mode):
    """``path`` opened in binary (``"rb"``) or, for the csv module, text mode (``"r"``: UTF-8 without its BOM,
    ``newline=""``, invalid bytes kept as lone surrogates by ``surrogateescape`` so that a bad row does not stop
    the reader). Standard input (``"-"``) is not closed."""
    text = {"encoding": "utf-8-sig", "errors": "surrogateescape", "newline": ""}
    if path != "-":
        with open(path, mode, **({} if mode == "rb" else text)) as f:
            yield f
    elif mode == "rb":
        yield sys.stdin.buffer
    else:
        f = io.TextIOWrapper(sys.stdin.buffer, **text)
        try:
            yield f
        finally:
            f.detach()


def _lines(path):
    """``(line number, bytes)`` of each non-blank line (a leading BOM, the final ``\\n`` and ``\\r`` removed)."""
    with _open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if raw and not raw.isspace():
                yield n, raw


def _read_lines(source, path, first, skip, parse):
    count, name = 0, source.name_of(path)
    for n, raw in _lines(path):
        if count >= skip:
            values, error = parse(source, raw)
            yield source.make_record(first + count, f"{name} line {n}", values, error)
        count += 1
    return count


def _decode(raw):
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"


def _txt_values(source, raw):
    line, error = _decode(raw)
    return (None, error) if error else ({source.text_field: line}, None)


def _jsonl_values(source, raw):
    line, error = _decode(raw)
    return (None, error) if error else _parse_json(line)


def _parse_json(line):
    """``(object, None)`` for a line holding a JSON object, else ``(None, why not)``."""
    try:
        item = json.loads(line, object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        return None, f"a JSON object has the key {exc.key!r} twice"
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    except RecursionError:
        return None, "not JSON (nested too deeply)"
    return (item, None) if isinstance(item, dict) else (None, f"expected a JSON object, got {json_kind(None, item)}")


def json_kind(name, value):
    """How a JSON value of the wrong type is named in a reason: ``"a JSON number"``, ``"a JSON null"``."""
    if value is None:
        return "a JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    names = {str: "string", int: "number", float: "number", list: "array", dict: "object"}
    return f"a JSON {names.get(type(value), type(value).__name__)}"


# --- CSV and TSV --------------------------------------------------------------------------------------------

def _csv_rows(reader, name):
    """The rows of a ``csv.reader``. Raises InvalidInputError for a ``csv.Error`` (a field over the limit)."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInputError(f"--input {name!r} line {reader.line_num}: not CSV ({exc})") from None
        yield row


def csv_header(path, delimiter=","):
    """The column names of a csv/tsv file's header row (None for an empty file). Raises InvalidInputError
    for a header the csv module cannot read; OSError when the file cannot be opened."""
    with _open(path, "r") as f:
        return next(_csv_rows(csv.reader(f, delimiter=delimiter), display(path)), None)


def read_csv(source, path, first, skip, delimiter=","):
    """Reader of csv (``delimiter=","``) and tsv (``"\\t"``) files: see the module doc."""
    count, name = 0, source.name_of(path)
    with _open(path, "r") as f:
        rows = _csv_rows(csv.reader(f, delimiter=delimiter), name)
        header = next(rows, None)
        index = column_index(header, path, source)
        for n, row in enumerate(rows, start=1):
            if not row:
                continue  # an empty line is no record (but counts as a row of the file)
            if count >= skip:
                values, error = _csv_values(len(header), index, row)
                yield source.make_record(first + count, f"{name} row {n}", values, error)
            count += 1
    return count


def _csv_values(width, index, row):
    """``(values, error)`` of a csv row: a used field that is not UTF-8 is left out of the values."""
    if len(row) != width:
        return None, f"{len(row)} field{'s' * (len(row) != 1)}, the header has {width}"
    values = {name: row[i] for name, i in index.items()}
    invalid = {name: reason for name, reason in ((n, _utf8_error(n, v)) for n, v in values.items()) if reason}
    return {n: v for n, v in values.items() if n not in invalid}, next(iter(invalid.values()), None)


def _utf8_error(name, value):
    """None for a value that was valid UTF-8, else why not (its lone surrogates stand for undecodable bytes)."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 ({exc.reason} at byte {exc.start} of field {name!r})"
    return None


# --- Parquet ------------------------------------------------------------------------------------------------

def parquet_columns(path, name=None):
    """The column names of a Parquet file's schema. Raises InvalidInputError when it is not a Parquet file (named
    ``name``, default the path)."""
    pq = parquet_module()
    try:
        return pq.read_schema(path).names
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise InvalidInputError(f"--input {name or display(path)!r}: not a Parquet file ({exc})") from None


def read_parquet(source, path, first, skip):
    """Reader of Parquet files: whole row groups inside ``skip`` are not read at all. See the module doc."""
    parquet_columns(path, source.name_of(path))  # a clear error for a file that is no (longer a) Parquet file
    with parquet_module().ParquetFile(path) as pf:
        schema = pf.schema_arrow
        column_index(schema.names, path, source)
        total = pf.metadata.num_rows
        if skip >= total:
            return total
        groups, row = _row_groups_after(pf.metadata, skip)
        types = {f.name: str(f.type) for f in schema}
        kind = functools.partial(_parquet_kind, types)
        columns = [name for name, _ in source.columns()]
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
            cut = min(max(skip - row, 0), batch.num_rows)
            row += cut
            values = {name: batch.column(name).to_pylist()[cut:] for name in columns}
            for i in range(batch.num_rows - cut):
                item = {name: values[name][i] for name in columns}
                yield source.make_record(first + row, f"{source.name_of(path)} row {row + 1}", item, kind=kind)
                row += 1
    return total


def _row_groups_after(metadata, skip):
    """``(row groups to read, index of their first row)``: the groups wholly inside the first ``skip`` rows left out."""
    start = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if start + rows > skip:
            return list(range(group, metadata.num_row_groups)), start
        start += rows
    return [], start


def _parquet_kind(types, name, value):
    return "null" if value is None else f"a Parquet {types[name]}"


READERS = {
    "jsonl": functools.partial(_read_lines, parse=_jsonl_values),
    "txt": functools.partial(_read_lines, parse=_txt_values),
    "csv": read_csv,
    "tsv": functools.partial(read_csv, delimiter="\t"),
    "parquet": read_parquet,
}
