"""The typed manifest: validation of every field a reader uses, the JSON round trip, the variant policy, and what
``e5onnx info`` shows of it."""

import json
import re

import pytest

from e5onnx.cli import main
from e5onnx.config import MANIFEST_FILE
from e5onnx.errors import ModelFolderError
from e5onnx.runtime.manifest import Manifest
from e5onnx.runtime.variants import Host


def _data(folder):
    return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))


def test_round_trip_gives_back_the_same_json(tiny_export, tmp_path):
    data = _data(tiny_export)
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data
    assert list(manifest.to_dict()) == list(data)  # same key order: a rewritten file diffs cleanly
    manifest.write(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8")) == data
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]  # no temporary file left


def test_typed_fields_of_an_export(tiny_export):
    m = Manifest.read(tiny_export)
    assert (m.embedding_dim, m.max_length, m.pad_token_id) == (32, 128, 0)
    assert (m.query_prefix, m.passage_prefix) == ("query: ", "passage: ")
    assert set(m.variants) == {"fp32", "optimized", "int8"}
    assert m.variant_file("int8") == "model_int8.onnx" and m.variants["fp32"].parity_passed
    assert m.variants["int8"].gate["passed"] is True
    assert m.source.path == m.source.id and m.source.hub_id is None  # exported from a local folder
    assert m.tolerances.int8_min_cosine == 0.995


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["variants"]["fp32"]["parity"].update(passed="yes"), "variants['fp32']['parity']['passed'] must be true or false"),
    (lambda m: m["variants"]["int8"]["quantization"].update(cpu_kind=3), "variants['int8']['quantization']['cpu_kind'] must be a string"),
    (lambda m: m["variants"].update(fp16={"file": "x.onnx"}), "variants['fp16']: unknown variant"),
    (lambda m: m["source"].update(id=5), "source['id'] must be a string or null"),
    (lambda m: m["source"]["weights"].update({"w.bin": {"size": 1}}), "source['weights']['w.bin'] must have a sha256"),
    (lambda m: m["tolerances"].update(int8_min_cosine=2), "tolerance int8_min_cosine must be a number from -1 to 1"),
    (lambda m: m.update(embedding_dim=True), "embedding_dim must be a whole number >= 1, got True"),
    (lambda m: m["embedding_ranges"]["min"].pop(), "embedding_ranges['min'] must be a list of 32 finite numbers"),
    (lambda m: m["embedding_ranges"]["max"].__setitem__(3, float("nan")),
     "embedding_ranges['max'] must be a list of 32 finite numbers (embedding_dim)"),
    (lambda m: m["embedding_ranges"]["min"].__setitem__(5, 2.0), "embedding_ranges: min > max at dimension 5"),
    (lambda m: m.update(embedding_ranges=[0, 1]), "embedding_ranges must be an object"),
])
def test_each_malformed_field_is_named(tiny_export, edit, message):
    data = _data(tiny_export)
    edit(data)
    with pytest.raises(ModelFolderError, match=re.escape(f"'m.json' is malformed: {message}")):
        Manifest.from_dict(data, "m.json")


def test_usable_variants_says_why_not(tiny_export):
    data = _data(tiny_export)
    kind = data["variants"]["int8"]["quantization"]["cpu_kind"]
    data["variants"]["bf16"] = {"file": "model.onnx", "parity": {"passed": True}}
    data["variants"]["optimized"]["parity"]["passed"] = False
    m = Manifest.from_dict(data)
    here = Host(kind, native_bf16=False)
    assert m.usable_variants(here) == [
        ("bf16", "this CPU has no native bf16 (AMX-BF16 / AVX512-BF16)"),
        ("int8", None),
        ("optimized", "its parity check did not pass"),
        ("fp32", None),
    ]
    assert m.choose_variant("auto", here) == "int8"
    assert m.choose_variant("auto", Host(kind, native_bf16=True, openvino=True)) == "bf16"
    elsewhere = Host("arm64", native_bf16=False)
    assert dict(m.usable_variants(elsewhere))["int8"] == f"it was gated on a {kind!r} CPU, this one is 'arm64'"
    assert m.choose_variant("auto", elsewhere) == "fp32"
    assert m.choose_variant("optimized", here) == "optimized"  # asked by name: used even if auto would not
    del data["variants"]["int8"]
    with pytest.raises(ModelFolderError, match="has no 'int8' variant .* export with --quantize int8"):
        Manifest.from_dict(data).choose_variant("int8", here)


def test_info_shows_the_auto_choice_and_the_gate(tiny_export, capsys):
    assert main(["info", str(tiny_export)]) == 0
    info = json.loads(capsys.readouterr().out)
    m = Manifest.read(tiny_export)
    assert info["auto_variant"] == m.choose_variant("auto") == "int8"
    int8 = info["variants"]["int8"]
    assert int8["auto_may_use"] is True and int8["auto_skips_because"] is None
    assert int8["int8_gate"]["passed"] is True and int8["int8_gate"]["cpu_kind"] == m.variants["int8"].gated_cpu_kind
    assert int8["int8_gate"]["min_cosine"] >= 0.995 and int8["weight_form"] in ("int8/127", "int8/63", "uint8/127")
    assert int8["size_bytes"] == (tiny_export / "model_int8.onnx").stat().st_size
    assert main(["info", str(tiny_export), "--full"]) == 0
    assert json.loads(capsys.readouterr().out) == _data(tiny_export)
