"""e5onnx.corpus.sources: every input format read as records, bad rows as records, start skipping, refusals,
describe(), standard input, bounded memory, and the real SciFact corpus when ../shared has it."""

import hashlib
import io
import json
import os
import pickle
import sys
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e5onnx.config import shared_dir
from e5onnx.corpus import formats
from e5onnx.corpus.records import Record
from e5onnx.corpus.sources import HEAD_BYTES, Source, open_source
from e5onnx.errors import InvalidInputError

SCIFACT_PART1 = shared_dir() / "data" / "scifact" / "corpus.part1.jsonl"


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def jsonl(*items):
    return "".join(json.dumps(item) + "\n" for item in items)


def read(path, start=0, **kwargs):
    return list(open_source(path, **kwargs).records(start))


def one(tmp_path, line, name="a.jsonl", **kwargs):
    """The single record of a one-line file."""
    (record,) = read(write(tmp_path, name, line), **kwargs)
    return record


def write_parquet(tmp_path, name, table, row_group_size=None):
    path = str(tmp_path / name)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


# --- JSON lines ---------------------------------------------------------------------------------------------

def test_jsonl_records_in_order_with_default_ids(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"text": "alpha"}, {"text": "beta", "other": 1}))
    assert read(path) == [Record(0, f"{path} line 1", "1", "alpha"), Record(1, f"{path} line 2", "2", "beta")]


def test_jsonl_blank_lines_are_no_records_but_count_as_lines(tmp_path):
    path = write(tmp_path, "a.jsonl", '\n{"text": "a"}\n  \t\n{"text": "b"}\n\n\n')
    assert [(r.ordinal, r.where, r.text) for r in read(path)] == [(0, f"{path} line 2", "a"),
                                                                  (1, f"{path} line 4", "b")]


def test_jsonl_bom_and_crlf(tmp_path):
    path = write(tmp_path, "a.jsonl", b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b\\r"}\r\n')
    assert [r.text for r in read(path)] == ["a", "b\r"]


def test_jsonl_scifact_shape_title_and_text(tmp_path):
    path = write(tmp_path, "corpus.jsonl", jsonl({"_id": "4983", "title": "Brains.", "text": "White matter."}))
    (record,) = read(path, id_field="_id", title_field="title")
    assert (record.id, record.text, record.ok) == ("4983", "Brains. White matter.", True)


@pytest.mark.parametrize("item, text", [
    ({"text": "body"}, "body"),                      # missing title: the text alone
    ({"title": None, "text": "body"}, "body"),       # null title
    ({"title": "", "text": "body"}, "body"),         # empty title: no leading space
    ({"title": "Head", "text": ""}, "Head"),         # empty text: the title alone
])
def test_jsonl_title_missing_null_or_empty(tmp_path, item, text):
    assert one(tmp_path, jsonl(item), title_field="title").text == text


def test_jsonl_title_and_text_both_empty_is_empty_text(tmp_path):
    record = one(tmp_path, jsonl({"title": " ", "text": ""}), title_field="title")
    assert (record.text, record.error) == (None, "empty text")


def test_jsonl_non_string_title_is_a_bad_record(tmp_path):
    record = one(tmp_path, jsonl({"title": 3, "text": "body"}), title_field="title")
    assert (record.text, record.error) == (None, "field 'title' is a JSON number, not a string")


@pytest.mark.parametrize("value, expected", [("doc-7", "doc-7"), (7, "7"), (-12, "-12"), (10**20, str(10**20))])
def test_jsonl_id_string_or_integer(tmp_path, value, expected):
    record = one(tmp_path, jsonl({"id": value, "text": "t"}), id_field="id")
    assert (record.id, record.ok) == (expected, True)


@pytest.mark.parametrize("item, reason", [
    ({"id": 1.5, "text": "t"}, "field 'id' is the number 1.5, not a string or an integer"),
    ({"id": 2.0, "text": "t"}, "field 'id' is the number 2.0, not a string or an integer"),
    ({"id": True, "text": "t"}, "field 'id' is a JSON boolean, not a string or an integer"),
    ({"id": None, "text": "t"}, "field 'id' is a JSON null, not a string or an integer"),
    ({"id": [1], "text": "t"}, "field 'id' is a JSON array, not a string or an integer"),
    ({"id": {}, "text": "t"}, "field 'id' is a JSON object, not a string or an integer"),
    ({"id": "", "text": "t"}, "field 'id' is empty"),
    ({"text": "t"}, "field 'id' is missing"),
])
def test_jsonl_unusable_id_is_a_bad_record(tmp_path, item, reason):
    record = one(tmp_path, jsonl(item), id_field="id")
    assert (record.id, record.text, record.error) == (None, None, reason)  # no position posing as an id


def test_jsonl_bad_record_keeps_a_readable_id(tmp_path):
    record = one(tmp_path, jsonl({"_id": "x9", "text": "  "}), id_field="_id")
    assert (record.id, record.error) == ("x9", "empty text")


@pytest.mark.parametrize("line, reason", [
    (b'{"a":\xff}', "not valid UTF-8 (invalid start byte at byte 5)"),
    (b'{"text": "caf\xc3"}', "not valid UTF-8 (invalid continuation byte at byte 13)"),
    (b"not json", "not JSON (Expecting value)"),
    (b'{"text": "a"', "not JSON (Expecting ',' delimiter)"),
    (b'{"text": "a", "text": "b"}', "a JSON object has the key 'text' twice"),
    (b'{"text": "a", "m": {"k": 1, "k": 2}}', "a JSON object has the key 'k' twice"),
    (b"[1, 2]", "expected a JSON object, got a JSON array"),
    (b'"just a string"', "expected a JSON object, got a JSON string"),
    (b"42", "expected a JSON object, got a JSON number"),
    (b"null", "expected a JSON object, got a JSON null"),
    (b"[" * 100000 + b"]" * 100000, "not JSON (nested too deeply)"),
    (b'{"body": "a"}', "field 'text' is missing"),
    (b'{"text": 5}', "field 'text' is a JSON number, not a string"),
    (b'{"text": null}', "field 'text' is a JSON null, not a string"),
    (b'{"text": ["a"]}', "field 'text' is a JSON array, not a string"),
    (b'{"text": false}', "field 'text' is a JSON boolean, not a string"),
    (b'{"text": ""}', "empty text"),
    (b'{"text": " \\n\\t\\u00a0"}', "empty text"),
])
def test_jsonl_bad_row_reasons(tmp_path, line, reason):
    path = write(tmp_path, "a.jsonl", b'{"text": "fine"}\n\n' + line + b"\n")
    good, record = read(path)
    assert good.ok
    assert record == Record(1, f"{path} line 3", "2", None, reason)


def test_jsonl_keep_values(tmp_path):
    item = {"text": "t", "s": "café", "n": 3, "f": 0.5, "b": True, "z": None, "l": ["é", 1], "o": {"k": "v"}}
    record = one(tmp_path, jsonl(item), keep=("s", "n", "f", "b", "z", "l", "o", "absent"))
    assert record.keep == {"s": "café", "n": "3", "f": "0.5", "b": "true", "z": None, "l": '["é", 1]',
                           "o": '{"k": "v"}', "absent": None}


def test_jsonl_unparsable_row_has_every_keep_name_as_none(tmp_path):
    record = one(tmp_path, "oops\n", keep=("a", "b"))
    assert (record.error, record.keep) == ("not JSON (Expecting value)", {"a": None, "b": None})


def test_jsonl_custom_text_field(tmp_path):
    assert one(tmp_path, jsonl({"contents": "abc", "text": "no"}), text_field="contents").text == "abc"


# --- plain text ---------------------------------------------------------------------------------------------

def test_txt_lines_bom_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path, "a.txt", b"\xef\xbb\xbffirst line\r\n\r\n  second, with spaces  \n \n\n")
    assert read(path) == [Record(0, f"{path} line 1", "1", "first line"),
                          Record(1, f"{path} line 3", "2", "  second, with spaces  ")]


@pytest.mark.parametrize("line, reason", [
    (b"bad \xff byte", "not valid UTF-8 (invalid start byte at byte 4)"),
    ("\u00a0\u3000".encode(), "empty text"),  # non-ASCII whitespace: a record, but no text
])
def test_txt_bad_lines(tmp_path, line, reason):
    path = write(tmp_path, "a.txt", b"ok\n" + line + b"\nok again\n")
    assert [r.error for r in read(path)] == [None, reason, None]


def test_txt_last_line_without_newline(tmp_path):
    assert [r.text for r in read(write(tmp_path, "a.txt", "one\ntwo"))] == ["one", "two"]


# --- CSV and TSV --------------------------------------------------------------------------------------------

def test_csv_quoted_fields_with_commas_quotes_and_newlines(tmp_path):
    path = write(tmp_path, "docs.csv", 'id,text,lang\r\nd1,"one, two",en\r\nd2,"line 1\r\nline 2 ""q""",fr\r\n')
    assert read(path, id_field="id", keep=("lang",)) == [
        Record(0, f"{path} row 1", "d1", "one, two", keep={"lang": "en"}),
        Record(1, f"{path} row 2", "d2", 'line 1\r\nline 2 "q"', keep={"lang": "fr"})]


def test_tsv_quoted_fields_with_tabs_and_newlines(tmp_path):
    path = write(tmp_path, "docs.tsv", 'title\ttext\n"A\tB"\t"x\ny"\n\t"plain"\n')
    assert [r.text for r in read(path, title_field="title")] == ["A\tB x\ny", "plain"]


def test_csv_bom_header_and_empty_lines(tmp_path):
    path = write(tmp_path, "a.csv", b"\xef\xbb\xbftext\na\n\nb\n\n")
    assert [(r.ordinal, r.where, r.text) for r in read(path)] == [(0, f"{path} row 1", "a"),
                                                                  (1, f"{path} row 3", "b")]


@pytest.mark.parametrize("row, reason", [
    ("x,y,z", "3 fields, the header has 2"),
    ("x", "1 field, the header has 2"),
    ("x,", "empty text"),
    ('x,"  "', "empty text"),
])
def test_csv_bad_rows(tmp_path, row, reason):
    path = write(tmp_path, "a.csv", f"id,text\nk,good\n{row}\n")
    good, record = read(path)
    assert good.ok
    assert record == Record(1, f"{path} row 2", "2", None, reason)


def test_csv_invalid_utf8_in_a_used_field_is_a_bad_row_with_its_id(tmp_path):
    path = write(tmp_path, "a.csv", b"id,text\nk1,caf\xe9 au lait\nk2,fine\n")
    assert read(path, id_field="id") == [
        Record(0, f"{path} row 1", "k1", None, "not valid UTF-8 (invalid continuation byte at byte 3 of field 'text')"),
        Record(1, f"{path} row 2", "k2", "fine")]


def test_csv_invalid_utf8_in_an_unused_column_is_no_error(tmp_path):
    path = write(tmp_path, "a.csv", b"junk,text\n\xff\xfe,good\n")
    assert [(r.text, r.error) for r in read(path)] == [("good", None)]


def test_csv_invalid_utf8_id_is_no_id(tmp_path):
    record = one(tmp_path, b"id,text\n\xffk,good\n", "a.csv", id_field="id")
    assert (record.id, record.error) == (None, "not valid UTF-8 (invalid start byte at byte 0 of field 'id')")


def test_csv_empty_strings_for_id_and_keep(tmp_path):
    record = one(tmp_path, "id,text,k\n,t,\n", "a.csv", id_field="id", keep=("k",))
    assert (record.error, record.keep) == ("field 'id' is empty", {"k": ""})


def test_csv_field_longer_than_the_csv_default_limit(tmp_path):
    long_text = "word " * 60000  # 300,000 characters (the csv module's default limit is 131,072)
    assert one(tmp_path, f'text\n"{long_text}"\n', "a.csv").text == long_text


# --- Parquet ------------------------------------------------------------------------------------------------

def test_parquet_records_keep_and_ids(tmp_path):
    table = pa.table({"doc": pa.array([10, 11], pa.int64()), "title": ["T", None], "text": ["body", "other"],
                      "score": [0.5, None], "tags": [["a", "é"], []]})
    path = write_parquet(tmp_path, "c.parquet", table)
    assert read(path, id_field="doc", title_field="title", keep=("score", "tags")) == [
        Record(0, f"{path} row 1", "10", "T body", keep={"score": "0.5", "tags": '["a", "é"]'}),
        Record(1, f"{path} row 2", "11", "other", keep={"score": None, "tags": "[]"})]


@pytest.mark.parametrize("column, reason", [
    (pa.array([None], pa.string()), "field 'text' is null, not a string"),
    (pa.array([7], pa.int64()), "field 'text' is a Parquet int64, not a string"),
    (pa.array([b"raw"], pa.binary()), "field 'text' is a Parquet binary, not a string"),
    (pa.array([" "], pa.large_string()), "empty text"),
])
def test_parquet_bad_text(tmp_path, column, reason):
    path = write_parquet(tmp_path, "c.parquet", pa.table({"text": column}))
    assert read(path) == [Record(0, f"{path} row 1", "1", None, reason)]


@pytest.mark.parametrize("column, reason", [
    (pa.array([1.5]), "field 'id' is the number 1.5, not a string or an integer"),
    (pa.array([True]), "field 'id' is a Parquet bool, not a string or an integer"),
    (pa.array([None], pa.string()), "field 'id' is null, not a string or an integer"),
])
def test_parquet_bad_id(tmp_path, column, reason):
    path = write_parquet(tmp_path, "c.parquet", pa.table({"id": column, "text": ["t"]}))
    assert [(r.id, r.error) for r in read(path, id_field="id")] == [(None, reason)]


def test_parquet_reads_only_the_needed_columns(tmp_path, monkeypatch):
    path = write_parquet(tmp_path, "c.parquet", pa.table({"text": ["a"], "big": ["x" * 1000], "k": [1]}))
    asked = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, **kw: asked.append(kw["columns"]) or iter_batches(self, **kw))
    assert [r.keep for r in read(path, keep=("k",))] == [{"k": "1"}] and asked == [["text", "k"]]


# --- several paths, start -----------------------------------------------------------------------------------

def test_several_paths_are_one_input(tmp_path):
    a = write(tmp_path, "a.jsonl", jsonl({"text": "a1"}, {"text": "a2"}))
    b = write(tmp_path, "b.JSONL", "\n" + jsonl({"text": "b1"}))
    assert [(r.ordinal, r.where, r.id, r.text) for r in read([a, b])] == [
        (0, f"{a} line 1", "1", "a1"), (1, f"{a} line 2", "2", "a2"), (2, f"{b} line 2", "3", "b1")]


def inputs(tmp_path):
    """Three files of each format, 0, 7 and 5 rows (bad ones included), as {format: [paths]}."""
    rows = [[], [f"t{i}" for i in range(7)], [f"u{i}" for i in range(5)]]
    made = {}
    for fmt in ("jsonl", "txt", "csv", "tsv", "parquet"):
        made[fmt] = []
        for n, texts in enumerate(rows):
            name = f"{n}.{fmt}"
            if fmt == "jsonl":
                path = write(tmp_path, name, "".join(f'{{"text": "{t}"}}\n\n' if i != 3 else "bad\n"
                                                     for i, t in enumerate(texts)))
            elif fmt == "txt":
                path = write(tmp_path, name, "".join(f"{t}\n \n" for t in texts))
            elif fmt in ("csv", "tsv"):
                path = write(tmp_path, name, "text\n" + "".join(f'"{t}\n"\n' for t in texts))
            else:
                path = write_parquet(tmp_path, name, pa.table({"text": pa.array(texts, pa.string())}),
                                     row_group_size=2)
            made[fmt].append(path)
    return made


@pytest.mark.parametrize("fmt", ["jsonl", "txt", "csv", "tsv", "parquet"])
def test_start_gives_the_tail_of_a_full_read(tmp_path, fmt):
    source = open_source(inputs(tmp_path)[fmt])
    full = list(source.records())
    assert len(full) == 12
    for start in (0, 1, 3, 6, 7, 8, 11, 12, 20):
        assert list(source.records(start)) == full[start:], start


def test_start_does_not_parse_the_skipped_json_lines(tmp_path, monkeypatch):
    path = write(tmp_path, "a.jsonl", jsonl(*({"text": f"t{i}"} for i in range(50))))
    parsed = []
    parse = formats._parse_json
    monkeypatch.setattr(formats, "_parse_json", lambda line: parsed.append(line) or parse(line))
    records = read(path, start=45)
    assert [r.ordinal for r in records] == [45, 46, 47, 48, 49] and len(parsed) == 5


def test_start_does_not_read_skipped_parquet_row_groups(tmp_path, monkeypatch):
    path = write_parquet(tmp_path, "c.parquet", pa.table({"text": [f"t{i}" for i in range(10)]}), row_group_size=3)
    groups = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, **kw: groups.append(kw["row_groups"]) or iter_batches(self, **kw))
    assert [r.text for r in read(path, start=7)] == ["t7", "t8", "t9"] and groups == [[2, 3]]


@pytest.mark.parametrize("start", [-1, 1.0, "1", True])
def test_start_must_be_a_natural_number(tmp_path, start):
    source = open_source(write(tmp_path, "a.txt", "x\n"))
    with pytest.raises(InvalidInputError, match=r"^start: expected an int >= 0, got "):
        source.records(start)


# --- standard input -----------------------------------------------------------------------------------------

def stdin(monkeypatch, data):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_stdin_is_txt_by_default(monkeypatch):
    stdin(monkeypatch, b"\xef\xbb\xbfone\r\n\ntwo\n")
    source = open_source("-")
    assert source.format == "txt"
    assert list(source.records()) == [Record(0, "<stdin> line 1", "1", "one"), Record(1, "<stdin> line 3", "2", "two")]


def test_stdin_jsonl(monkeypatch):
    stdin(monkeypatch, jsonl({"id": 5, "text": "a"}).encode())
    assert [(r.where, r.id, r.text) for r in open_source("-", "jsonl", id_field="id").records()] == [
        ("<stdin> line 1", "5", "a")]


def test_stdin_csv_is_read_and_left_open(monkeypatch):
    stdin(monkeypatch, b'text,k\n"a,b",1\n')
    assert [(r.where, r.text, r.keep) for r in open_source("-", "csv", keep=["k"]).records()] == [
        ("<stdin> row 1", "a,b", {"k": "1"})]
    assert not sys.stdin.buffer.closed


def test_stdin_csv_header_is_checked_when_read(monkeypatch):
    stdin(monkeypatch, b"body\nx\n")
    source = open_source("-", "csv")  # the header of standard input cannot be read ahead
    with pytest.raises(InvalidInputError, match=r"^--input '<stdin>': no column 'text' \(--text-field\); "
                                                r"its columns are 'body'$"):
        list(source.records())


# --- refusals -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, message", [
    ([[]], {}, "--input: no path given"),
    (["missing.jsonl"], {}, "--input 'missing.jsonl': no such file"),
    (["."], {}, "--input '.': not a file"),
    (["a.dat"], {}, ("--input 'a.dat': cannot tell the format from the name; give --format "
                     "(jsonl, csv, tsv, txt, parquet)")),
    (["a.jsonl"], {"fmt": "xml"}, "--format 'xml': unknown, expected one of jsonl, csv, tsv, txt, parquet"),
    ([["a.jsonl", "a.csv"]], {}, ("--input: the paths are of different formats ('a.jsonl' is jsonl, 'a.csv' is "
                                  "csv); give files of one format")),
    ([["-", "a.jsonl"]], {}, "--input '-' (standard input) cannot be combined with other paths"),
    (["-"], {"fmt": "parquet"}, ("--format parquet: Parquet cannot be read from standard input (--input '-'); "
                                 "give the file's path")),
    (["a.txt"], {"title_field": "t"}, ("--title-field: a txt input has no fields (each line is one text); "
                                       "use jsonl, csv, tsv or parquet")),
    (["a.txt"], {"id_field": "i"}, ("--id-field: a txt input has no fields (each line is one text); "
                                    "use jsonl, csv, tsv or parquet")),
    (["a.txt"], {"keep": ["k"]}, ("--keep: a txt input has no fields (each line is one text); "
                                  "use jsonl, csv, tsv or parquet")),
    (["a.txt"], {"text_field": "body"}, ("--text-field: a txt input has no fields (each line is one text); "
                                         "use jsonl, csv, tsv or parquet")),
    (["a.jsonl"], {"text_field": ""}, "--text-field: empty field name"),
    (["a.jsonl"], {"title_field": ""}, "--title-field: empty field name"),
    (["a.jsonl"], {"id_field": ""}, "--id-field: empty field name"),
    (["a.jsonl"], {"keep": ["k", ""]}, "--keep: empty field name"),
    (["a.jsonl"], {"id_field": 3}, "--id-field: expected a field name (str), got int"),
    (["a.jsonl"], {"title_field": "text"}, "--title-field 'text': it is already the --text-field (a field has one role: text, title or id)"),
    (["a.jsonl"], {"id_field": "t", "title_field": "t"}, "--id-field 't': it is already the --title-field (a field has one role: text, title or id)"),
    (["a.jsonl"], {"keep": ["id"]}, ("--keep 'id': the output already has a column 'id' (the row ids); a kept "
                                    "column cannot replace it")),
    (["a.jsonl"], {"keep": ["embedding"]}, ("--keep 'embedding': the output already has a column "
                                           "'embedding' (the vectors); a kept column cannot replace it")),
    (["a.jsonl"], {"keep": ["k", "j", "k"]}, "--keep 'k': given twice"),
])
def test_open_source_refusals(tmp_path, monkeypatch, args, kwargs, message):
    monkeypatch.chdir(tmp_path)
    for name in ("a.jsonl", "a.csv", "a.txt", "a.dat"):
        write(tmp_path, name, "text\n")
    with pytest.raises(InvalidInputError) as caught:
        open_source(*args, **kwargs)
    assert str(caught.value) == message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_open_source_refuses_an_unreadable_file(tmp_path):
    path = write(tmp_path, "a.jsonl", "{}\n")
    os.chmod(path, 0)
    with pytest.raises(InvalidInputError, match=r"^--input '.*a\.jsonl': cannot be read \(Permission denied\)$"):
        open_source(path)


def test_csv_missing_columns_are_named_with_the_columns_the_file_has(tmp_path):
    good = write(tmp_path, "good.csv", "id,text,k\n1,a,b\n")
    bad = write(tmp_path, "bad.csv", "id,body\n1,a\n")
    with pytest.raises(InvalidInputError) as caught:
        open_source([good, bad], id_field="id", keep=["k"])
    assert str(caught.value) == (f"--input {bad!r}: no column 'text' (--text-field), 'k' (--keep); "
                                 "its columns are 'id', 'body'")


def test_tsv_header_is_split_on_tabs(tmp_path):
    path = write(tmp_path, "a.tsv", "id,text\n")
    with pytest.raises(InvalidInputError, match=r"no column 'text' \(--text-field\); its columns are 'id,text'$"):
        open_source(path)


def test_csv_empty_file_is_refused(tmp_path):
    path = write(tmp_path, "a.csv", "")
    with pytest.raises(InvalidInputError, match=r"^--input '.*a\.csv': the file is empty \(no header row\)$"):
        open_source(path)


def test_csv_repeated_needed_column_is_refused(tmp_path):
    path = write(tmp_path, "a.csv", "text,x,text\na,b,c\n")
    with pytest.raises(InvalidInputError, match=r"the column 'text' \(--text-field\) appears 2 times$"):
        open_source(path)


def test_parquet_missing_column_is_refused(tmp_path):
    path = write_parquet(tmp_path, "c.parquet", pa.table({"body": ["a"], "n": [1]}))
    with pytest.raises(InvalidInputError) as caught:
        open_source(path)
    assert str(caught.value) == f"--input {path!r}: no column 'text' (--text-field); its columns are 'body', 'n'"


def test_not_a_parquet_file_is_refused(tmp_path):
    path = write(tmp_path, "c.parquet", "text\nnot parquet\n")
    with pytest.raises(InvalidInputError, match=r"^--input '.*c\.parquet': not a Parquet file \("):
        open_source(path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = write_parquet(tmp_path, "c.parquet", pa.table({"text": ["a"]}))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import pyarrow.parquet now raises ImportError
    with pytest.raises(InvalidInputError, match=r"^reading Parquet needs pyarrow: pip install 'e5onnx\[corpus\]'$"):
        open_source(path)


def test_columns_are_checked_again_when_read(tmp_path):
    path = write(tmp_path, "a.csv", "text\nx\n")
    source = open_source(path)
    write(tmp_path, "a.csv", "body\nx\n")  # changed after open_source (e.g. before a Ray task reads it)
    with pytest.raises(InvalidInputError, match=r"no column 'text' \(--text-field\); its columns are 'body'$"):
        list(source.records())


def test_a_pathlike_path_and_a_single_keep_name(tmp_path):
    write(tmp_path, "a.jsonl", jsonl({"text": "t", "k": 1}))
    source = open_source(tmp_path / "a.jsonl", keep="k")
    assert (source.paths, source.keep) == ((str(tmp_path / "a.jsonl"),), ("k",))


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write(tmp_path, "data.log", jsonl({"text": "a"}))
    assert [r.text for r in read(path, fmt="JSONL")] == ["a"]


# --- describe, pickling -------------------------------------------------------------------------------------

def test_describe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    head = b'{"text": "' + b"x" * (HEAD_BYTES + 10) + b'"}\n'
    write(tmp_path, "a.jsonl", head)
    write(tmp_path, "b.jsonl", "")
    source = open_source(["a.jsonl", "b.jsonl"], id_field="_id", keep=["k"])
    described = source.describe()
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    assert described == {
        "paths": [a, b], "format": "jsonl", "bytes": len(head), "text_field": "text", "title_field": None,
        "id_field": "_id", "keep": ["k"],
        "files": [{"path": a, "bytes": len(head), "mtime_ns": os.stat(a).st_mtime_ns,
                   "head_sha256": hashlib.sha256(head[:HEAD_BYTES]).hexdigest()},
                  {"path": b, "bytes": 0, "mtime_ns": os.stat(b).st_mtime_ns,
                   "head_sha256": hashlib.sha256(b"").hexdigest()}]}
    assert json.loads(json.dumps(described)) == described


def test_describe_stdin(monkeypatch):
    stdin(monkeypatch, b"x\n")
    assert open_source("-").describe() == {"paths": ["-"], "format": "txt", "bytes": None, "files": [],
                                           "text_field": "text", "title_field": None, "id_field": None, "keep": []}


def test_source_pickles(tmp_path):
    source = open_source([write(tmp_path, "a.csv", "t,k\nx,y\n")], text_field="t", keep="k")
    copy = pickle.loads(pickle.dumps(source))
    assert copy == source and list(copy.records()) == [Record(0, f"{source.paths[0]} row 1", "1", "x", keep={"k": "y"})]


def test_source_made_directly_with_an_unknown_format():
    with pytest.raises(InvalidInputError, match=r"^--format must be one of jsonl, csv, tsv, txt, parquet, got 'xml'$"):
        Source(("a.xml",), "xml").records()


# --- memory, real data --------------------------------------------------------------------------------------

def test_a_large_jsonl_is_streamed(tmp_path):
    rows = 100_000
    line = '{"id": %d, "text": "' + "passage text " * 15 + '"}\n'
    path = write(tmp_path, "big.jsonl", "".join(line % i for i in range(rows)))
    size = os.path.getsize(path)
    tracemalloc.start()
    try:
        count = sum(1 for record in open_source(path, id_field="id").records() if record.ok)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == rows
    assert size > 20_000_000 and peak < 1_000_000, (size, peak)


@pytest.mark.skipif(not SCIFACT_PART1.is_file(), reason=f"{SCIFACT_PART1} is absent (no ../shared)")
def test_scifact_corpus_part1():
    records = list(open_source(str(SCIFACT_PART1), id_field="_id", title_field="title").records())
    assert (len(records), sum(r.ok for r in records), records[0].id) == (1728, 1728, "4983")
    assert records[0].text.startswith("Microstructural development of human newborn cerebral white matter ")
