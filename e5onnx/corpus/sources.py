"""The input of a corpus job: files (or standard input) read as one stream of :class:`~e5onnx.corpus.records.Record`.

:func:`open_source` checks the input up front and gives a :class:`Source`, a small picklable value (a Ray read task
gets it) whose :meth:`Source.records` opens the files and yields one record per input row, in input order, over
all the paths in turn (one format for all). Formats, all UTF-8 (a byte-order mark at the start of a file is
dropped):

- ``jsonl``: one JSON object per line. A blank line (empty, or ASCII whitespace only) is no record and is
  skipped, so trailing blank lines are no error; ``\\r\\n`` endings are accepted.
- ``txt``: each non-blank line is one text (as is, a final ``\\r`` removed); blank lines are skipped as in
  jsonl. A line has no fields: a title, id or kept field (or a text field other than ``"text"``) is refused.
- ``csv`` / ``tsv``: a header row naming the columns, then one record per row (the ``csv`` module's dialect:
  quoted fields may hold the delimiter, quotes and newlines). A completely empty line is no record.
- ``parquet``: one record per row (needs pyarrow: ``pip install 'e5onnx[corpus]'``); never from standard input.

Nothing is read whole: lines, csv rows and Parquet batches of :data:`~e5onnx.corpus.formats.PARQUET_BATCH_ROWS`
rows (of the needed columns only) are read one at a time, so memory does not grow with the input.

Each record (:class:`~e5onnx.corpus.records.Record`):

- ``ordinal``: 0-based, counting the records of all files (blank lines are not counted);
- ``where``: ``"PATH line N"`` (jsonl, txt: the file's 1-based physical line) or ``"PATH row N"`` (csv, tsv:
  1-based data row, the header not counted, empty lines counted; parquet: 1-based row of that file). PATH is the
  path as given, ``<stdin>`` for standard input;
- ``id``: the ``id_field`` value: a string as is (an empty one is an error), an integer (JSON, Parquet) in
  decimal; any other value (a float, boolean, null, list, object) or a missing field makes the record bad;
  without ``id_field``, ``str(ordinal + 1)``; None for a bad record whose id cannot be read (so the rejects file
  never shows a position as if it were an id);
- ``text``: the ``text_field`` string; with ``title_field``, ``title + " " + text`` (a missing, null or empty
  title gives the text alone, an empty text the title alone). It must hold more than whitespace;
- ``keep``: ``{name: str or None}`` for each ``keep`` column: a string as is, a null or missing value None,
  another JSON or Parquet value as ``json.dumps(value, ensure_ascii=False)`` (``str()`` for what JSON cannot
  hold: dates, decimals, bytes). Every name is present, also in bad records (None where unreadable).

A bad row is no exception: it is a record with ``text=None`` and ``error`` saying why, without the place (that is
in ``where``), so the job can stop on it or skip it. The reasons (``'text'`` standing for the field's name):

- ``"not valid UTF-8 (invalid start byte at byte 5)"`` (jsonl, txt: 0-based byte offset in the line; csv/tsv:
  ``"... at byte 5 of field 'text')"``: only the used columns are checked, the id is still read if valid);
- ``"not JSON (Expecting value)"`` (the ``json`` module's message), ``"not JSON (nested too deeply)"``;
- ``"a JSON object has the key 'text' twice"`` (any object of the line, as :mod:`e5onnx.textfile`);
- ``"expected a JSON object, got a JSON array"`` (string, number, boolean, null);
- ``"field 'text' is missing"``; ``"field 'text' is a JSON number, not a string"`` (parquet: ``"is a Parquet
  int64"``, ``"is null"``), the same for the title field;
- ``"field 'id' is missing"``, ``"field 'id' is empty"``, ``"field 'id' is the number 1.5, not a string or an
  integer"``, ``"field 'id' is a JSON boolean, not a string or an integer"``;
- ``"empty text"`` (the text, after the title is added, is empty or whitespace only);
- ``"3 fields, the header has 2"`` (csv, tsv).

When a row has several problems the reason is the first of: decoding, parsing, text, title, id.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError
from ..runtime.texts import text_problem
from . import formats
from .formats import FORMATS
from .records import Record

#: The output's own columns (a ``--keep`` column of the same name would replace them), name -> what it holds.
OUTPUT_COLUMNS = {"id": "the row ids", "embedding": "the vectors"}
#: Bytes at the start of each input file hashed by :meth:`Source.describe` (a resume compares them).
HEAD_BYTES = 1 << 20
_MISSING = object()


@dataclass(frozen=True)
class Source:
    """What to read and how; picklable (a Ray read task gets it): files are opened only by :meth:`records`.

    Build it with :func:`open_source`, which checks the paths and fields; a Source made directly is not checked.

    Attributes:
        paths: tuple of str, the input files read in order as one input; ``("-",)`` for standard input.
        format: one of :data:`~e5onnx.corpus.formats.FORMATS`.
        text_field: the field (column) holding the text.
        title_field: the field put before the text with a space, or None.
        id_field: the field holding the row's id, or None (ids are then 1-based positions).
        keep: tuple of the field names whose values are carried to the output.
        names: how each path is named in records and messages (None: the paths themselves); a Ray job reads
            absolute paths on a worker but names them as given.
    """

    paths: tuple
    format: str
    text_field: str = "text"
    title_field: str = None
    id_field: str = None
    keep: tuple = ()
    names: tuple = None

    def name_of(self, path):
        """How ``path`` (one of :attr:`paths`) is named in records' ``where`` and in messages: as the user gave it
        (:attr:`names`, when the paths were made absolute for another process), ``<stdin>`` for ``"-"``."""
        if self.names is not None and path in self.paths:
            return str(self.names[self.paths.index(path)])
        return formats.display(path)

    def records(self, start=0):
        """The input's records, in input order, from the one at ordinal ``start``.

        The first ``start`` records are passed over cheaply: jsonl and txt lines are counted, not decoded or
        parsed; csv rows are split but not checked; Parquet row groups (and whole files) before ``start`` are not
        read. A ``start`` past the end yields nothing.

        Args:
            start: int >= 0, the ordinal of the first record yielded (a resumed job's position).

        Returns:
            iterator of :class:`~e5onnx.corpus.records.Record` (see the module doc), ``ordinal`` from ``start``.

        Raises:
            InvalidInputError: ``start`` is not an int >= 0 or the format is unknown (at the call); while iterating,
                pyarrow is missing, a csv/tsv/parquet file lacks a needed column (checked again: a file may have
                changed since :func:`open_source`), a file is no Parquet file, or a csv field exceeds
                :data:`~e5onnx.corpus.formats.CSV_FIELD_LIMIT` characters.
            OSError: a file cannot be opened or read.
        """
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InvalidInputError(f"start: expected an int >= 0, got {start!r}")
        if self.format not in formats.READERS:
            raise InvalidInputError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        return self._records(formats.READERS[self.format], start)

    def columns(self):
        """``[(name, flag)]``: the fields read (text, title, id, then the kept ones) and their command-line flags."""
        named = [(self.text_field, "--text-field"), (self.title_field, "--title-field"), (self.id_field, "--id-field")]
        return [(n, flag) for n, flag in named if n is not None] + [(n, "--keep") for n in self.keep]

    def make_record(self, ordinal, where, values, error=None, kind=formats.json_kind):
        """The :class:`~e5onnx.corpus.records.Record` of one row, by the module doc's rules (used by the readers).

        Args:
            ordinal: int; where: str, as the record's.
            values: dict, field name -> value as read (str, int, float, bool, None, list, dict; an absent field is
                missing), or None for a row that could not be read at all (its id is then None, or the position
                without an id field; every kept value None).
            error: str or None, a reason the reader found (the record is then bad with it, its id and kept values
                still taken from ``values``).
            kind: ``kind(name, value) -> str`` names a value of the wrong type in a reason (``"a JSON number"``).

        Returns:
            Record.
        """
        if values is None:
            ident = None if self.id_field else str(ordinal + 1)
            return Record(ordinal, where, ident, None, error, dict.fromkeys(self.keep))
        text, text_error = _text(self, values, kind)
        ident, id_error = _ident(self.id_field, values, ordinal, kind)
        keep = {name: _kept(values.get(name)) for name in self.keep}
        error = error or text_error or id_error or self._unencodable(text, ident, keep)
        if ident is not None and text_problem(ident):
            ident = None  # the rejects file and messages are UTF-8 too
        return Record(ordinal, where, ident, None if error else text, error, keep)

    def _unencodable(self, text, ident, keep):
        """Why a value cannot be written as UTF-8 (a lone surrogate from a JSON ``\\ud800`` escape), or None."""
        named = [(self.text_field, text), (self.id_field, ident), *keep.items()]
        for name, value in named:
            problem = text_problem(value) if isinstance(value, str) else None
            if problem:
                return f"field {name!r}: {problem}"
        return None

    def _records(self, read, start):
        first = 0  # ordinal of the current file's first record
        for path in self.paths:
            first += yield from read(self, path, first, max(start - first, 0))

    def describe(self):
        """A JSON-serialisable description of the input, for the run manifest (a resume refuses a different one).

        Returns:
            dict: ``paths`` (list of absolute paths, or ``["-"]``), ``format``, ``bytes`` (int, the files' total
            size; None for standard input), ``files`` (list, per file: ``path`` absolute, ``bytes``, ``mtime_ns``,
            ``head_sha256``: sha256 hex of its first :data:`HEAD_BYTES`; empty for standard input),
            ``text_field``, ``title_field``, ``id_field``, ``keep`` (list).

        Raises:
            InvalidInputError: a file can no longer be read.
        """
        files = [_file_facts(p) for p in self.paths if p != "-"]
        return {"paths": [f["path"] for f in files] or ["-"], "format": self.format,
                "bytes": sum(f["bytes"] for f in files) if files else None, "files": files,
                "text_field": self.text_field, "title_field": self.title_field, "id_field": self.id_field,
                "keep": list(self.keep)}


def open_source(paths, fmt=None, text_field="text", title_field=None, id_field=None, keep=()):
    """A checked :class:`Source`.

    Args:
        paths: a path (str or os.PathLike) or a sequence of them, read in order; ``"-"`` is standard input
            (alone).
        fmt: one of :data:`~e5onnx.corpus.formats.FORMATS` (any case); default from the suffixes (``.jsonl``,
            ``.csv``, ``.tsv``, ``.txt``, ``.parquet``, any case; all paths alike), ``txt`` for standard input.
        text_field: str, the field holding the text. title_field: str or None, a field put before the text.
            id_field: str or None, the field holding the id. keep: a str or a sequence of str, fields carried to
            the output. See the module doc for what each becomes.

    Returns:
        Source.

    Raises:
        InvalidInputError: the message names the flag (``--input``, ``--format``, ``--text-field``,
            ``--title-field``, ``--id-field``, ``--keep``) and the path or name: no path; a path that does not
            exist, is not a file or cannot be read; an unknown format, or none given and a suffix that does not
            tell it, or paths of different formats; ``-`` with other paths, or with parquet; for txt, a title,
            id or keep field, or a text field other than ``"text"`` (a line has no fields); a field name that is
            empty or not a str; the text, title and id fields not all different; a keep name that is one of
            them or is repeated; for csv, tsv and parquet files (not standard input: its header is checked by
            :meth:`Source.records`), an empty csv file, a file that is no Parquet file, pyarrow missing, or a
            needed field that is not a column or is a repeated column of a file (the message lists its columns).
    """
    paths = (paths,) if isinstance(paths, (str, os.PathLike)) else tuple(paths)
    paths = tuple(os.fspath(p) for p in paths)
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    if not paths:
        raise InvalidInputError("--input: no path given")
    _check_paths(paths)
    fmt = formats.format_of(paths, fmt)
    _check_fields(fmt, text_field, title_field, id_field, keep)
    source = Source(paths, fmt, text_field, title_field, id_field, keep)
    if fmt in ("csv", "tsv", "parquet") and paths != ("-",):
        for path in paths:
            formats.column_index(_columns(fmt, path), path, source)
    return source


def _text(source, values, kind):
    text = values.get(source.text_field, _MISSING)
    error = _not_string(source.text_field, text, kind)
    if error:
        return None, error
    if source.title_field is not None:
        title = values.get(source.title_field)
        if title is None:
            title = ""
        elif not isinstance(title, str):
            return None, _not_string(source.title_field, title, kind)
        text = f"{title} {text}" if title and text else title or text
    return (text, None) if text.strip() else (None, "empty text")


def _not_string(name, value, kind):
    if value is _MISSING:
        return f"field {name!r} is missing"
    return None if isinstance(value, str) else f"field {name!r} is {kind(name, value)}, not a string"


def _ident(field, values, ordinal, kind):
    """``(id, None)``, or ``(None, why the id field is unusable)``; without an id field the id is the 1-based
    position."""
    if field is None:
        return str(ordinal + 1), None
    value = values.get(field, _MISSING)
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    if value is _MISSING or isinstance(value, str):
        why = "is missing" if value is _MISSING else "is empty"
    elif isinstance(value, float):
        why = f"is the number {value!r}, not a string or an integer"
    else:
        why = f"is {kind(field, value)}, not a string or an integer"
    return None, f"field {field!r} {why}"


def _kept(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _check_paths(paths):
    if "-" in paths:
        if len(paths) > 1:
            raise InvalidInputError("--input '-' (standard input) cannot be combined with other paths")
        return
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise InvalidInputError(f"--input {path!r}: no such file")
        if not p.is_file():
            raise InvalidInputError(f"--input {path!r}: not a file")
        try:
            p.open("rb").close()
        except OSError as exc:
            raise InvalidInputError(f"--input {path!r}: cannot be read ({exc.strerror})") from None


def _check_fields(fmt, text_field, title_field, id_field, keep):
    named = {"--text-field": text_field, "--title-field": title_field, "--id-field": id_field}
    for flag, name in [*named.items(), *(("--keep", k) for k in keep)]:
        if name is not None and not isinstance(name, str):
            raise InvalidInputError(f"{flag}: expected a field name (str), got {type(name).__name__}")
        if name == "" or (name is None and flag == "--text-field"):
            raise InvalidInputError(f"{flag}: empty field name")
    if fmt == "txt":
        given = [flag for flag, name in named.items() if name is not None and name != "text"]
        if given or keep:
            raise InvalidInputError(f"{(given or ['--keep'])[0]}: a txt input has no fields (each line is one "
                                    "text); use jsonl, csv, tsv or parquet")
    used = {}
    for flag, name in named.items():  # one role per field: the text, the title and the id differ
        if name is not None and name in used:
            raise InvalidInputError(f"{flag} {name!r}: it is already the {used[name]} (a field has one role: "
                                    "text, title or id)")
        if name is not None:
            used[name] = flag
    for name in keep:  # any input field may be kept, the text, title and id fields included
        if name in OUTPUT_COLUMNS:
            raise InvalidInputError(f"--keep {name!r}: the output already has a column {name!r} "
                                    f"({OUTPUT_COLUMNS[name]}); a kept column cannot replace it")
    if len(set(keep)) < len(keep):
        twice = next(k for i, k in enumerate(keep) if k in keep[:i])
        raise InvalidInputError(f"--keep {twice!r}: given twice")


def _columns(fmt, path):
    if fmt == "parquet":
        return formats.parquet_columns(path)
    try:
        return formats.csv_header(path, "\t" if fmt == "tsv" else ",")
    except OSError as exc:
        raise InvalidInputError(f"--input {path!r}: cannot be read ({exc.strerror})") from None


def _file_facts(path):
    p = Path(path).resolve()
    try:
        stat = p.stat()
        with p.open("rb") as f:
            head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    except OSError as exc:
        raise InvalidInputError(f"--input {path!r}: cannot be read ({exc.strerror})") from None
    return {"path": str(p), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}
