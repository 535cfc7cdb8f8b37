"""Input files of the command line (e5onnx.textfile): plain text keeps every line, JSON lines skip blank ones,
and a bad line is named with what it holds."""

import pytest

from e5onnx.errors import InvalidInputError
from e5onnx.textfile import read_numbered_texts, read_texts


def _file(tmp_path, data, name="in.jsonl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_jsonl_blank_lines_are_skipped_and_lines_still_numbered(tmp_path):
    path = _file(tmp_path, b'\n{"text": "a"}\n  \t\n"b"\r\n\r\n{"text": ""}\n\n')
    assert read_numbered_texts(path) == (["a", "b", ""], [2, 4, 6])


def test_plain_text_keeps_empty_and_whitespace_lines(tmp_path):
    path = _file(tmp_path, b"a\n\n  \nb\n", name="in.txt")
    assert read_numbered_texts(path) == (["a", "", "  ", "b"], [1, 2, 3, 4])


def test_jsonl_flag_applies_to_any_name(tmp_path):
    path = _file(tmp_path, b'"a"\n\n', name="in.txt")
    assert read_texts(path, jsonl=True) == ["a"]


_EXPECTED = "expected a JSON string or an object with a 'text' string"


@pytest.mark.parametrize("line, reason", [
    (b'{"body": "x", "id": 3}', f"{_EXPECTED}; the object has keys 'body', 'id'"),
    (b"{}", f"{_EXPECTED}; the object is empty"),
    (b'{"text": 5}', f"{_EXPECTED}; its 'text' is a JSON number"),
    (b'{"text": null}', f"{_EXPECTED}; its 'text' is a JSON null"),
    (b"42", f"{_EXPECTED}; got a JSON number"),
    (b'["a"]', f"{_EXPECTED}; got a JSON array"),
    (b"true", f"{_EXPECTED}; got a JSON boolean"),
    (b'{"text": "a", "text": "b"}', "a JSON object has the key 'text' twice"),
    (b'{"text": "a", "meta": {"id": 1, "id": 2}}', "a JSON object has the key 'id' twice"),
    (b"{not json", "not JSON (Expecting property name enclosed in double quotes)"),
])
def test_bad_jsonl_line_is_named_with_what_it_holds(tmp_path, line, reason):
    path = _file(tmp_path, b'{"text": "ok"}\n\n' + line + b"\n")
    with pytest.raises(InvalidInputError) as info:
        read_texts(path)
    assert str(info.value) == f"{path} line 3: {reason}"


def test_unreadable_file_names_the_label(tmp_path):
    with pytest.raises(InvalidInputError, match=r"cannot read --calibration '.*missing\.txt': No such file"):
        read_texts(tmp_path / "missing.txt", label="--calibration")
