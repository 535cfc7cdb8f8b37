"""Loading model folders: variants, missing / corrupt / tampered files, manifest checks, threads, no network.

Every test that tampers with a folder works on a copy of the session-scoped ``tiny_export`` fixture.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from e5onnx.config import MANIFEST_FILE, THREADS_ENV, TOKENIZER_FILE, VARIANT_FILES
from e5onnx.errors import (
    E5OnnxError,
    IntegrityError,
    InvalidInputError,
    ModelFolderError,
)
from e5onnx.runtime import cpu
from e5onnx.runtime.atomic import write_json_atomic
from e5onnx.runtime.embedder import Embedder
from e5onnx.runtime.manifest import Manifest, check_file, sha256_file

TEXTS = [
    "query: how much protein should a female eat",
    "passage: paris is the capital of france",
    "hello world",
    "the summit of the city",
]


@pytest.fixture
def folder(tiny_export, tmp_path):
    """A private, resolved copy of the tiny export that the test may tamper with."""
    dest = tmp_path / "model"
    shutil.copytree(tiny_export, dest)
    return dest.resolve()


def _manifest(folder):
    return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))


def _write_manifest(folder, manifest):
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _assert_unit_rows(vectors, dim):
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), dim)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------------


def test_every_variant_loads_and_matches_fp32(folder):
    loaded = {v: Embedder.load(folder, variant=v, threads=1) for v in ("fp32", "optimized", "int8", "auto")}
    for name in ("fp32", "optimized", "int8"):
        assert loaded[name].variant == name
        assert loaded[name].model_path == folder / VARIANT_FILES[name]
    assert loaded["auto"].variant == "int8"  # gated at export on this very CPU
    assert loaded["auto"].model_path == folder / VARIANT_FILES["int8"]

    vectors = {name: e.embed(TEXTS) for name, e in loaded.items()}
    for name, v in vectors.items():
        assert (loaded[name].dim, loaded[name].max_length) == (32, 128)  # the tiny BERT, exported at 128
        _assert_unit_rows(v, 32)

    ref = vectors["fp32"]
    assert np.abs(vectors["optimized"] - ref).max() < 1e-5
    assert np.array_equal(vectors["auto"], vectors["int8"])
    cosines = np.sum(vectors["int8"] * ref, axis=1)
    assert cosines.min() >= 0.985
    assert cosines.mean() >= 0.997


def test_load_accepts_a_str_path(folder):
    embedder = Embedder.load(str(folder), variant="fp32", threads=1)
    assert embedder.variant == "fp32"
    assert embedder.manifest.to_dict() == _manifest(folder)  # the typed manifest gives back the very JSON


def test_revision_is_refused_for_a_local_folder(folder):
    with pytest.raises(ModelFolderError, match="revision 'no-such-branch' applies to Hub repo ids"):
        Embedder.load(folder, variant="fp32", threads=1, revision="no-such-branch")


def test_auto_skips_variants_whose_parity_failed(folder):
    manifest = _manifest(folder)
    manifest["variants"]["int8"]["parity"]["passed"] = False
    _write_manifest(folder, manifest)
    assert Embedder.load(folder, threads=1).variant == "optimized"
    manifest["variants"]["optimized"]["parity"]["passed"] = False
    _write_manifest(folder, manifest)
    assert Embedder.load(folder, threads=1).variant == "fp32"


def test_auto_falls_back_to_fp32_without_faster_variants(folder):
    manifest = _manifest(folder)
    del manifest["variants"]["optimized"]
    del manifest["variants"]["int8"]
    _write_manifest(folder, manifest)
    assert Embedder.load(folder, variant="auto", threads=1).variant == "fp32"


def test_unknown_variant_name_is_invalid_input(folder):
    with pytest.raises(InvalidInputError, match="fp16"):
        Embedder.load(folder, variant="fp16")


def test_absent_variant_lists_the_available_ones(folder):
    manifest = _manifest(folder)
    del manifest["variants"]["int8"]
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, variant="int8", threads=1)
    assert not isinstance(info.value, IntegrityError)
    message = str(info.value)
    assert "'int8'" in message
    assert "fp32" in message and "optimized" in message
    # the other variants still load
    assert Embedder.load(folder, variant="optimized", threads=1).variant == "optimized"


# --------------------------------------------------------------------------------------------------------
# Missing files
# --------------------------------------------------------------------------------------------------------


def test_missing_model_file_names_file_and_folder(folder):
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, variant="fp32", threads=1)
    assert type(info.value) is ModelFolderError
    assert "model.onnx" in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_tokenizer_names_file_and_folder(folder):
    (folder / TOKENIZER_FILE).unlink()
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, variant="fp32", threads=1)
    assert type(info.value) is ModelFolderError
    assert TOKENIZER_FILE in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_manifest(folder):
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, threads=1)
    assert type(info.value) is ModelFolderError
    assert MANIFEST_FILE in str(info.value)
    assert str(folder) in str(info.value)


def test_only_the_needed_files_are_checked(folder):
    (folder / "model.onnx").unlink()
    embedder = Embedder.load(folder, variant="int8", threads=1)
    assert embedder.variant == "int8"
    _assert_unit_rows(embedder.embed(TEXTS), 32)
    assert Embedder.load(folder, variant="auto", threads=1).variant == "int8"


def test_empty_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="manifest.json"):
        Embedder.load(tmp_path, threads=1)


def test_path_that_is_a_file(folder):
    path = folder / "model.onnx"
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(path, threads=1)
    assert "not a folder" in str(info.value)
    assert "model.onnx" in str(info.value)
    with pytest.raises(ModelFolderError, match=r"manifest\.json' is not a folder"):
        Embedder.load(str(folder / MANIFEST_FILE), threads=1)


# --------------------------------------------------------------------------------------------------------
# Corrupt files and the integrity check
# --------------------------------------------------------------------------------------------------------


def _flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_is_an_integrity_error(folder):
    path = folder / "model.onnx"
    size = path.stat().st_size
    _flip_byte(path)
    assert path.stat().st_size == size
    with pytest.raises(IntegrityError) as info:
        Embedder.load(folder, variant="fp32", threads=1)
    assert isinstance(info.value, ModelFolderError)
    message = str(info.value)
    assert "sha256" in message
    assert "model.onnx" in message
    assert str(folder) in message
    assert _manifest(folder)["files"]["model.onnx"]["sha256"] in message


def test_flipped_byte_in_tokenizer_is_an_integrity_error(folder):
    path = folder / TOKENIZER_FILE
    data = path.read_bytes()
    path.write_bytes(data.replace(b"[UNK]", b"[UNX]", 1))
    with pytest.raises(IntegrityError, match="sha256") as info:
        Embedder.load(folder, variant="fp32", threads=1)
    assert TOKENIZER_FILE in str(info.value)


def test_truncated_file_is_an_integrity_error_naming_the_size(folder):
    path = folder / "model_optimized.onnx"
    recorded = _manifest(folder)["files"]["model_optimized.onnx"]["size"]
    with open(path, "r+b") as f:
        f.truncate(recorded - 100)
    with pytest.raises(IntegrityError) as info:
        Embedder.load(folder, variant="optimized", threads=1)
    message = str(info.value)
    assert str(recorded) in message
    assert str(recorded - 100) in message
    assert "bytes" in message
    assert "model_optimized.onnx" in message
    assert str(folder) in message


def _flip_weight_byte(path):
    """Flip the lowest mantissa byte of the first value of the largest float initializer of an ONNX file in
    place: same size, another sha256, still a valid graph (that one weight moves by under 1e-4 relative)."""
    import onnx

    tensor = max((t for t in onnx.load(str(path)).graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                 key=lambda t: len(t.raw_data))
    data = path.read_bytes()
    offset = data.find(tensor.raw_data)
    assert offset > 0 and data.count(tensor.raw_data) == 1, tensor.name
    _flip_byte(path, offset)


def test_verify_false_skips_the_checksum(folder):
    want = Embedder.load(folder, variant="fp32", threads=1).embed(TEXTS)
    path = folder / "model.onnx"
    size = path.stat().st_size
    _flip_weight_byte(path)
    assert path.stat().st_size == size
    with pytest.raises(IntegrityError, match="sha256"):
        Embedder.load(folder, variant="fp32", threads=1)
    embedder = Embedder.load(folder, variant="fp32", threads=1, verify=False)
    assert embedder.variant == "fp32"
    got = embedder.embed(TEXTS)
    _assert_unit_rows(got, 32)
    assert np.abs(got - want).max() < 1e-4  # the graph that ran is the edited one, one weight off


def test_verify_false_skips_the_size_check(folder):
    # The file is replaced by another valid graph of a different size: it loads without verification.
    shutil.copy(folder / "model_int8.onnx", folder / "model.onnx")
    with pytest.raises(IntegrityError, match="bytes"):
        Embedder.load(folder, variant="fp32", threads=1)
    embedder = Embedder.load(folder, variant="fp32", threads=1, verify=False)
    _assert_unit_rows(embedder.embed(TEXTS), 32)


def test_garbage_onnx_without_verify_is_a_model_folder_error(folder):
    (folder / "model.onnx").write_bytes(b"this is not an onnx graph")
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, variant="fp32", threads=1, verify=False)
    assert not isinstance(info.value, IntegrityError)
    assert "model.onnx" in str(info.value)


# --------------------------------------------------------------------------------------------------------
# Bad manifests
# --------------------------------------------------------------------------------------------------------


def test_manifest_not_json(folder):
    (folder / MANIFEST_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFolderError, match="not readable JSON") as info:
        Embedder.load(folder, threads=1)
    assert str(folder / MANIFEST_FILE) in str(info.value)


def test_manifest_not_utf8(folder):
    (folder / MANIFEST_FILE).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelFolderError, match="not readable JSON"):
        Embedder.load(folder, threads=1)


@pytest.mark.parametrize("content", ["[]", "null", '"e5onnx-model"', "3"])
def test_manifest_not_an_object(folder, content):
    (folder / MANIFEST_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ModelFolderError, match="not an e5onnx manifest"):
        Embedder.load(folder, threads=1)


def test_manifest_wrong_format(folder):
    manifest = _manifest(folder)
    manifest["format"] = "something-else"
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, threads=1)
    assert "not an e5onnx manifest" in str(info.value)
    assert "e5onnx-model" in str(info.value)
    assert str(folder / MANIFEST_FILE) in str(info.value)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_manifest_wrong_format_version(folder, version):
    manifest = _manifest(folder)
    manifest["format_version"] = version
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, threads=1)
    message = str(info.value)
    assert "format_version" in message
    assert repr(version) in message
    assert "version 1" in message


@pytest.mark.parametrize("key", ["files", "variants", "embedding_dim", "max_length"])
def test_manifest_missing_required_key(folder, key):
    manifest = _manifest(folder)
    del manifest[key]
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFolderError, match=repr(key)):
        Embedder.load(folder, threads=1)


def test_file_not_listed_in_manifest(folder):
    manifest = _manifest(folder)
    del manifest["files"]["model.onnx"]
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFolderError) as info:
        Embedder.load(folder, variant="fp32", threads=1)
    assert not isinstance(info.value, IntegrityError)
    assert "model.onnx" in str(info.value) and "not listed" in str(info.value)


# --------------------------------------------------------------------------------------------------------
# No network for local folders
# --------------------------------------------------------------------------------------------------------

_NO_NETWORK = textwrap.dedent(
    """
    import socket, sys

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network access attempted: " + repr(args))

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse

    from e5onnx.runtime.embedder import Embedder

    embedder = Embedder.load(sys.argv[1], threads=1)
    vectors = embedder.embed(["hello world", "paris is a city"])
    assert vectors.shape == (2, embedder.dim), vectors.shape
    assert not calls, calls
    # the runtime is torch-free (e5onnx.runtime's docstring)
    heavy = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
    assert not heavy, heavy
    print("OK", embedder.variant)
    """
)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative-name-like-a-repo-id"])
def test_local_folder_makes_no_network_calls(tiny_export, tmp_path, relative):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: nothing to fall back on
    # "tiny-onnx" relative to its parent is also a syntactically valid Hub repo id: the local folder wins.
    model, cwd = (tiny_export.name, tiny_export.parent) if relative else (str(tiny_export), tmp_path)
    result = subprocess.run([sys.executable, "-c", _NO_NETWORK, model], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK", "int8"]


# --------------------------------------------------------------------------------------------------------
# Threads and CPUs
# --------------------------------------------------------------------------------------------------------


def test_explicit_threads(tiny_export, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")  # an explicit argument wins over the environment
    embedder = Embedder.load(tiny_export, variant="fp32", threads=1)
    assert embedder.threads == 1
    assert embedder.encoder.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("affinity, quota, expected", [({0}, None, 1), ({0, 1}, None, 2), ({0, 1}, 0.5, 1)])
def test_default_threads_are_the_available_cpus(tiny_export, monkeypatch, affinity, quota, expected):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(affinity))
    monkeypatch.setattr(cpu, "_cgroup_cpu_limit", lambda root="/sys/fs/cgroup": quota)
    embedder = Embedder.load(tiny_export, variant="fp32")
    assert embedder.threads == expected
    assert embedder.encoder.session.get_session_options().intra_op_num_threads == expected


def test_threads_from_environment(tiny_export, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert Embedder.load(tiny_export, variant="fp32").threads == 1


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_bad_threads_environment(tiny_export, monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(InvalidInputError) as info:
        Embedder.load(tiny_export, variant="fp32")
    assert THREADS_ENV in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("threads", [0, -1, 1.0, "2", True])
def test_bad_threads_argument(tiny_export, threads):
    with pytest.raises(InvalidInputError, match="threads"):
        Embedder.load(tiny_export, variant="fp32", threads=threads)


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu._cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cpu._cgroup_cpu_limit(str(tmp_path)) == 4.0


def test_cgroup_v2_unlimited(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu._cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu._cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu._cgroup_cpu_limit(tmp_path) == 2.5


def test_cgroup_unknown(tmp_path):
    assert cpu._cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cpu._cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize("cpus, limit, expected", [(8, 0.5, 1), (8, 1.5, 2), (8, None, 8), (8, 1000.0, 8),
                                                   (3, 2.0, 2), (1, 4.0, 1)])
def test_available_cpus_caps_by_quota(monkeypatch, cpus, limit, expected):
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(cpu, "_cgroup_cpu_limit", lambda root="/sys/fs/cgroup": limit)
    assert cpu.available_cpus() == expected


def test_available_cpus_without_affinity_uses_the_cpu_count(monkeypatch):
    def no_affinity(pid):
        raise OSError("sched_getaffinity not supported")

    monkeypatch.setattr(cpu.os, "sched_getaffinity", no_affinity)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 6)
    monkeypatch.setattr(cpu, "_cgroup_cpu_limit", lambda root="/sys/fs/cgroup": None)
    assert cpu.available_cpus() == 6
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: None)  # unknown: one
    assert cpu.available_cpus() == 1


# --------------------------------------------------------------------------------------------------------
# e5onnx.runtime.manifest helpers
# --------------------------------------------------------------------------------------------------------


def test_sha256_file(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(3000) + b"e5onnx"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(str(empty)) == hashlib.sha256(b"").hexdigest()


def test_sha256_file_over_one_chunk(tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom((1 << 20) * 2 + 17)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_write_json_atomic(tmp_path):
    target = tmp_path / "out" / "data.json"
    target.parent.mkdir()
    old = os.umask(0o022)
    try:
        write_json_atomic(target, {"a": 1, "text": "café 東京"})
        assert "café 東京" in target.read_text(encoding="utf-8")  # ensure_ascii=False
        assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1, "text": "café 東京"}
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        # overwriting replaces the file, still without leftovers
        write_json_atomic(target, [1, 2, 3])
        assert json.loads(target.read_text(encoding="utf-8")) == [1, 2, 3]
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(old)
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.json"]
    assert target.read_text(encoding="utf-8").endswith("\n")


def test_write_json_atomic_failure_leaves_nothing(tmp_path):
    target = tmp_path / "data.json"
    with pytest.raises(TypeError):
        write_json_atomic(target, {"not serialisable": object()})
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failed rewrite untouched
    write_json_atomic(target, {"keep": True})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": {1, 2}})
    assert json.loads(target.read_text(encoding="utf-8")) == {"keep": True}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_check_file(folder):
    manifest = Manifest.read(folder)
    assert check_file(folder, "model.onnx", manifest) == folder / "model.onnx"
    assert check_file(str(folder), TOKENIZER_FILE, manifest, verify_checksum=False) == folder / TOKENIZER_FILE

    # missing
    with pytest.raises(ModelFolderError) as info:
        check_file(folder, "nope.onnx", manifest)
    assert type(info.value) is ModelFolderError
    assert "nope.onnx" in str(info.value) and str(folder) in str(info.value)

    # present but not listed
    (folder / "extra.onnx").write_bytes(b"x")
    with pytest.raises(ModelFolderError) as info:
        check_file(folder, "extra.onnx", manifest)
    assert type(info.value) is ModelFolderError
    assert "extra.onnx" in str(info.value) and "not listed" in str(info.value)

    # size mismatch
    bad = _manifest(folder)
    bad["files"]["model.onnx"]["size"] += 1
    bad = Manifest.from_dict(bad)
    with pytest.raises(IntegrityError, match="bytes"):
        check_file(folder, "model.onnx", bad)
    assert check_file(folder, "model.onnx", bad, verify_checksum=False) == folder / "model.onnx"

    # sha256 mismatch
    bad = _manifest(folder)
    bad["files"]["model.onnx"]["sha256"] = "0" * 64
    bad = Manifest.from_dict(bad)
    with pytest.raises(IntegrityError, match="sha256"):
        check_file(folder, "model.onnx", bad)
    assert check_file(folder, "model.onnx", bad, verify_checksum=False) == folder / "model.onnx"


def test_errors_form_one_hierarchy():
    assert issubclass(IntegrityError, ModelFolderError)
    assert issubclass(ModelFolderError, E5OnnxError)
    assert issubclass(InvalidInputError, ValueError)


# ------------------------------------------------------------------------------------ malformed manifests


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(variants=[]), "variants must be a non-empty object"),
    (lambda m: m["files"]["model.onnx"].pop("size"), "files['model.onnx'] must have a sha256 string and a size"),
    (lambda m: m.update(files=None), "files must be an object"),
    (lambda m: m.update(max_length="512"), "max_length must be a whole number >= 2"),
    (lambda m: m.update(pad_token_id=-1), "pad_token_id must be a whole number >= 0"),
    (lambda m: m["variants"]["fp32"].update(parity="yes"), "variants['fp32']['parity'] must be an object"),
    (lambda m: m["variants"]["fp32"].update(file="/etc/passwd"), "must be a file name inside the folder"),
    (lambda m: m.update(tolerances={"foo": 1}), "tolerances must be an object with keys among"),
    (lambda m: m.update(prefixes={"query": 3}), "prefixes must be an object"),
    (lambda m: m.update(pad_token_id=999999), "pad_token_id 999999 is not an id of"),
    (lambda m: (m.update(embedding_dim=768), m.pop("embedding_ranges")),  # ranges must be 768 long too
     "outputs 32 dims but the manifest records embedding_dim 768"),
])
def test_malformed_manifest_is_a_clear_error(folder, edit, message):
    manifest = _manifest(folder)
    edit(manifest)
    _write_manifest(folder, manifest)
    with pytest.raises(ModelFolderError, match=re.escape(message)):
        Embedder.load(folder, variant="fp32", threads=1)


def test_auto_with_a_corrupt_int8_file_stays_an_integrity_error(folder):
    path = folder / VARIANT_FILES["int8"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="variant 'auto' chose 'int8'; pass variant='fp32'"):
        Embedder.load(folder, threads=1)
    assert Embedder.load(folder, variant="fp32", threads=1).variant == "fp32"


def test_manifest_prefixes_are_used(folder):
    manifest = _manifest(folder)
    manifest["prefixes"] = {"query": "Q: ", "passage": "P: "}
    _write_manifest(folder, manifest)
    e = Embedder.load(folder, variant="fp32", threads=1)
    assert (e.query_prefix, e.passage_prefix) == ("Q: ", "P: ")
    np.testing.assert_allclose(e.embed_queries(["hello"]), e.embed(["Q: hello"]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(e.embed_passages(["P: hello"]), e.embed(["P: hello"]), atol=1e-6, rtol=0)


def test_token_budget_splits_long_batches_without_changing_vectors(tiny_export, monkeypatch):
    import e5onnx.runtime.embedder as embedder_module

    e = Embedder.load(tiny_export, variant="fp32", threads=1)
    texts = ["word " * (i * 7 % 120) for i in range(40)]
    want = np.concatenate([e.embed([t]) for t in texts])
    monkeypatch.setattr(embedder_module, "TOKEN_BUDGET", 256)
    shapes, run = [], e.encoder.run
    monkeypatch.setattr(e.encoder, "run", lambda ids, mask: shapes.append(ids.shape) or run(ids, mask))
    got = e.embed(texts, batch_size=40)
    assert max(b * s for b, s in shapes) <= 256 and len(shapes) > 1
    assert sum(b for b, _ in shapes) == len(texts)
    assert np.abs(got - want).max() < 1e-5


def test_session_spins_only_within_a_run_and_keeps_its_arena(tiny_export):
    e = Embedder.load(tiny_export, variant="fp32", threads=1)
    options = e.encoder.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # no arena shrinkage after a run
        e.encoder.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
    vectors = e.embed(["query: a", "passage: " + "b " * 300])  # runs with those options
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)


def test_verified_file_is_not_hashed_again_until_it_changes(folder, monkeypatch, tmp_path):
    from e5onnx.runtime import manifest as manifest_module

    monkeypatch.setenv("E5ONNX_CACHE_DIR", str(tmp_path / "cache"))
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    Embedder.load(folder, variant="fp32", threads=1)
    assert sorted(hashed) == ["model.onnx", TOKENIZER_FILE]
    assert len(list((tmp_path / "cache" / "verified").iterdir())) == 2
    hashed.clear()
    Embedder.load(folder, variant="fp32", threads=1)
    assert hashed == []  # unchanged since verified: no second sha256 (0.16 s for e5-small fp32)
    path = folder / "model.onnx"
    before = path.stat()
    _flip_byte(path)  # same size; put the old mtime back, as a careful tamperer would
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(IntegrityError, match="sha256"):  # the ctime still changed: hashed again, caught
        Embedder.load(folder, variant="fp32", threads=1)
    assert hashed == ["model.onnx"]


def test_without_a_cache_every_load_hashes(folder, monkeypatch):
    from e5onnx.runtime import manifest as manifest_module

    monkeypatch.setenv("E5ONNX_CACHE_DIR", "")
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    Embedder.load(folder, variant="fp32", threads=1)
    Embedder.load(folder, variant="fp32", threads=1)
    assert hashed.count("model.onnx") == 2


def test_embed_token_ids_equals_embed_and_checks_rows(tiny_export):
    e = Embedder.load(tiny_export, variant="fp32", threads=1)
    texts = ["query: paris", "passage: " + "the city of paris " * 30, ""]
    rows = e.tokenize(texts)
    assert np.array_equal(e.embed_token_ids(rows), e.embed(texts))
    raw = e.embed_token_ids(rows, normalize=False)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), e.embed(texts), atol=1e-6)
    assert e.embed_token_ids([]).shape == (0, e.dim)
    vocab = e.vocab_size
    for bad, match in [([[]], r"rows\[0\]: must be a non-empty list of token ids, got an empty one"),
                       ([rows[0], [2] * 129], r"rows\[1\]: 129 tokens, over max_length 128"),
                       ([[2, vocab]], rf"rows\[0\]: token id {vocab} at position 1 is not in the vocabulary \(0 to {vocab - 1}\)"),
                       ([[2, -1]], r"rows\[0\]: token id -1 at position 1"),
                       ([[2, 1.0]], r"rows\[0\]: token id 1.0 at position 1 is not an integer"),
                       ([[2], None], r"rows\[1\]: must be a non-empty list of token ids, got NoneType"),
                       ("abc", "list of token-id lists")]:
        with pytest.raises(InvalidInputError, match=match):
            e.embed_token_ids(bad)
    with pytest.raises(InvalidInputError, match="normalize must be True or False"):
        e.embed_token_ids(rows, normalize="no")
