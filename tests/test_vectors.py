"""Compact output vectors: the bytes equal sentence-transformers' ``quantize_embeddings`` given the same ranges, the
ranges an export records are the PyTorch model's on the built-in calibration texts, the same text gives the same
bytes whatever its batch, an older folder without ranges gets a clear error, and the CLI writes every form."""

import json
import shutil

import numpy as np
import pytest

from e5onnx import Embedder, InvalidInputError, ModelFolderError
from e5onnx.cli import main
from e5onnx.config import MANIFEST_FILE, OUTPUT_FORMS
from e5onnx.export.ranges import builtin_texts
from e5onnx.runtime.vectors import quantize, vector_bytes

st_quantization = pytest.importorskip("sentence_transformers.util.quantization")

PRECISION = {"int8": "int8", "uint8": "uint8", "binary": "binary", "ubinary": "ubinary"}  # ST's names


def _unit(rng, n, dim):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embedder(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", threads=1)


@pytest.mark.parametrize("dim", [384, 37])  # 37: the last byte of a binary vector is padded with zero bits
def test_bytes_equal_sentence_transformers_given_the_same_ranges(dim):
    rng = np.random.default_rng(dim)
    calibration, vectors = _unit(rng, 300, dim), _unit(rng, 200, dim)
    ranges = np.vstack([calibration.min(0), calibration.max(0)]).astype(np.float32)
    ranges[:, 3] = ranges[0, 3]  # a dimension whose range is one value (step 1 in both)
    vectors[0, :4] = ranges[0, :4]  # exactly on a range's ends ...
    vectors[1, :4] = ranges[1, :4]
    vectors[2, :] = 0.0  # ... zero (binary: 0 is not > 0) and outside the ranges (clipped)
    vectors[3, :] = np.where(np.arange(dim) % 2, 1.0, -1.0)
    for form in PRECISION:
        want = st_quantization.quantize_embeddings(vectors, precision=PRECISION[form], ranges=ranges)
        got = quantize(vectors, form, ranges)
        assert got.dtype == want.dtype and got.shape == want.shape, form
        assert np.array_equal(got, want), form
        assert got.shape[1] * got.itemsize == vector_bytes(dim, form)
    assert quantize(vectors, "float") is not None and vector_bytes(dim, "float") == 4 * dim


def test_binary_bits_are_big_endian_packbits():
    v = np.array([[1, -1, 1, 1, -1, -1, -1, 0.5, -2]], dtype=np.float32)  # 9 dims: 2 bytes
    assert quantize(v, "ubinary").tolist() == [[0b10110001, 0b00000000]]
    assert quantize(v, "binary").tolist() == [[0b10110001 - 128, -128]]


def test_the_export_records_the_pytorch_models_ranges_of_the_builtin_texts(tiny_export, tiny_bert_dir):
    from e5onnx.export.reference import TorchReference

    record = json.loads((tiny_export / MANIFEST_FILE).read_text(encoding="utf-8"))["embedding_ranges"]
    texts = builtin_texts()
    assert record["texts"] == len(texts) == 240 and record["variant"] == "fp32" and record["normalized"] is True
    want = np.concatenate([TorchReference(tiny_bert_dir, 128).embed(texts[i:i + 32]) for i in range(0, 240, 32)])
    assert np.abs(np.array(record["min"]) - want.min(0)).max() <= 1e-5
    assert np.abs(np.array(record["max"]) - want.max(0)).max() <= 1e-5
    assert all(np.float32(x) == x for x in record["min"] + record["max"])  # float32 values, written exactly


def test_embed_gives_each_form_with_the_manifests_ranges(embedder, tiny_export):
    record = json.loads((tiny_export / MANIFEST_FILE).read_text(encoding="utf-8"))["embedding_ranges"]
    ranges = np.array([record["min"], record["max"]], dtype=np.float32)
    texts = ["query: how far is paris", "passage: paris is a city in france", "", "東京"]
    floats = embedder.embed(texts)
    for form in PRECISION:
        want = st_quantization.quantize_embeddings(floats, precision=PRECISION[form], ranges=ranges)
        got = embedder.embed(texts, output=form)
        assert got.dtype == want.dtype and np.array_equal(got, want), form
        assert np.array_equal(embedder.quantize(floats, form), want)
    assert embedder.embed_passages(["paris"], output="binary").shape == (1, 4)  # 32 dims, 8 a byte
    assert embedder.embed_queries(["paris"], output="uint8").shape == (1, 32)
    assert np.array_equal(embedder.embed(texts, output="float"), floats)


def test_the_same_text_gives_the_same_bytes_whatever_its_batch(embedder):
    text = "passage: the eiffel tower is in paris"
    others = ["hello", "what is the capital of france " * 9, "東京 city", "x"]
    for form in ("int8", "uint8", "binary"):
        alone = embedder.embed([text], output=form)[0]
        mixed = embedder.embed(others[:2] + [text] + others[2:], output=form)[2]
        assert alone.tobytes() == mixed.tobytes(), form


def test_a_folder_without_ranges_says_to_re_export(tiny_export, tmp_path, capsys):
    folder = tmp_path / "old-export"
    shutil.copytree(tiny_export, folder)
    data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    del data["embedding_ranges"]  # what an export before this field wrote
    (folder / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    old = Embedder.load(folder, variant="fp32", threads=1)
    assert old.embedding_ranges is None
    for form in ("int8", "uint8"):
        with pytest.raises(ModelFolderError, match=r"int8 and uint8 vectors need the per-dimension ranges .* has none "
                                                   r".*re-export the model with `e5onnx export SOURCE --output DIR`"):
            old.embed(["paris"], output=form)
    assert old.embed(["paris"], output="binary").shape == (1, 4) and old.embed(["paris"]).shape == (1, 32)
    code = main(["embed", str(folder), "paris", "--variant", "fp32", "--vectors", "int8"])
    assert code == 1
    assert "re-export the model" in capsys.readouterr().err
    assert main(["info", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["output_forms"] == ["float", "binary", "ubinary"]
    assert main(["info", str(tiny_export)]) == 0
    assert json.loads(capsys.readouterr().out)["output_forms"] == list(OUTPUT_FORMS)


def test_a_bad_output_form_is_named(embedder):
    for value in ("int4", "INT8", None, 8, "float32"):
        with pytest.raises(InvalidInputError, match=r"^output must be one of float, int8, uint8, binary, ubinary, got "):
            embedder.embed(["x"], output=value)
    assert OUTPUT_FORMS == ("float", "int8", "uint8", "binary", "ubinary")


def test_cli_writes_each_form_as_json_lines_and_npy(capsys, tmp_path, tiny_export, embedder):
    texts = ["hello world", "paris " * 200, "city"]
    for form in ("int8", "ubinary"):
        assert main(["embed", str(tiny_export), *texts, "--variant", "fp32", "--vectors", form]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        want = embedder.embed(texts, output=form)
        assert [r["embedding"] for r in rows] == want.tolist()
        assert all(isinstance(x, int) for r in rows for x in r["embedding"])
        npy = tmp_path / f"{form}.npy"
        assert main(["embed", str(tiny_export), *texts, "--variant", "fp32", "--vectors", form, "-o", str(npy)]) == 0
        assert f"wrote 3 x {want.shape[1]} {want.dtype} to" in capsys.readouterr().err
        got = np.load(npy)
        assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("output", ["float", "int8", "uint8", "binary", "ubinary"])
def test_no_texts_give_an_empty_array_of_the_forms_shape(embedder, output, capsys, tmp_path):
    """``[]`` gives ``(0, width)`` of the form's dtype, from the API and from the CLI's empty --input file
    (binary forms crashed in numpy's reshape)."""
    want = embedder.embed(["a"], output=output)
    for got in (embedder.embed([], output=output), embedder.embed_passages([], output=output, truncate="windows"),
                embedder.quantize(np.zeros((0, embedder.dim), np.float32), output)):
        assert got.shape == (0, want.shape[1]) and got.dtype == want.dtype
    empty, npy = tmp_path / "empty.txt", tmp_path / "out.npy"
    empty.write_text("", encoding="utf-8")
    assert main(["embed", str(embedder.model_path.parent), "--vectors", output, "--input", str(empty),
                     "--output", str(npy)]) == 0
    saved = np.load(npy)
    assert saved.shape == (0, want.shape[1]) and saved.dtype == want.dtype


@pytest.mark.parametrize("vectors, message", [
    (np.zeros((2, 7), np.float32), r"vectors must be \(n, 32\), got shape \(2, 7\)"),
    (np.zeros(32, np.float32), r"vectors must be \(n, 32\), got shape \(32,\)"),
    ([["a"] * 32], r"vectors must be an \(n, dim\) array of numbers"),
    (np.array([[0.1] * 32, [0.1] * 31 + [np.nan]], np.float32), r"^vectors\[1\] holds a NaN or infinite value$"),
    (np.array([[np.inf] * 32], np.float32), r"^vectors\[0\] holds a NaN or infinite value$"),
])
def test_quantize_names_what_is_wrong_with_the_vectors(embedder, vectors, message):
    for output in ("int8", "binary"):
        with pytest.raises(InvalidInputError, match=message):
            embedder.quantize(vectors, output)
