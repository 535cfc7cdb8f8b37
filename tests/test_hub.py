"""Hugging Face Hub code paths, offline: a hand-built HF cache (tests/hf_cache.py), ``HF_HUB_OFFLINE=1``.

huggingface-hub reads its environment when it is imported, so every Hub call runs in a fresh interpreter
(``sys.executable -c``) started with the offline environment. The child also makes every socket connection
fail, so a code path that tries the network fails fast instead of hanging, and a timeout bounds each child.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hf_cache import add_to_cache, offline_env

from e5onnx.runtime.manifest import sha256_file

TIMEOUT = 60
TEXTS = ["query: how much protein should a female eat", "passage: paris is the capital of france", "hello world"]

EXPORT_REPO = "someorg/tiny-e5onnx"
PARTIAL_REPO = "someorg/partial-e5onnx"
CORRUPT_REPO = "someorg/corrupt-e5onnx"
SOURCE_REPO = "someorg/tiny-bert"
ABSENT_REPO = "someorg/not-in-cache"
NOFILE_REPO = "someorg/nofile-e5onnx"

# Runs first in every child: no network at all, and a helper that reports an exception as JSON.
PRELUDE = textwrap.dedent(
    """
    import json, os, socket, sys

    def _refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test: " + repr(args))

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse

    import huggingface_hub.constants as _hf
    assert _hf.HF_HUB_OFFLINE, "HF_HUB_OFFLINE is not in effect"
    assert os.path.samefile(_hf.HF_HUB_CACHE, os.environ["HF_HUB_CACHE"]), _hf.HF_HUB_CACHE

    def error_of(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            return {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                    "message": str(exc)}
        return None

    def emit(obj):
        print("RESULT " + json.dumps(obj))
    """
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_export, tiny_bert_dir):
    """A fake HF cache holding the tiny export (whole, partial, corrupt) and the tiny BERT source."""
    root = tmp_path_factory.mktemp("hub")
    home = root / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)

    commit = add_to_cache(cache, EXPORT_REPO, tiny_export)
    partial = add_to_cache(cache, PARTIAL_REPO, tiny_export,
                           names={"manifest.json", "tokenizer.json", "model_int8.onnx"})
    corrupt_src = root / "corrupt-src"
    shutil.copytree(tiny_export, corrupt_src)
    data = bytearray((corrupt_src / "model_optimized.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt_src / "model_optimized.onnx").write_bytes(bytes(data))
    add_to_cache(cache, CORRUPT_REPO, corrupt_src)
    nofile_src = root / "nofile-src"  # a manifest whose "int8" entry omits "file" (default file name)
    shutil.copytree(tiny_export, nofile_src)
    manifest = json.loads((nofile_src / "manifest.json").read_text(encoding="utf-8"))
    del manifest["variants"]["int8"]["file"]
    (nofile_src / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    add_to_cache(cache, NOFILE_REPO, nofile_src)
    source = add_to_cache(cache, SOURCE_REPO, tiny_bert_dir)

    cwd = root / "cwd"  # an empty working folder: no repo id can be mistaken for a local path
    cwd.mkdir()
    env = offline_env(home)
    return SimpleNamespace(root=root, cache=cache, env=env, cwd=cwd, commit=commit, partial_commit=partial,
                           source_commit=source, export=tiny_export, source=tiny_bert_dir, nofile=nofile_src)


def run_child(hub, script, *args):
    """Run ``PRELUDE + script`` in a fresh interpreter offline; return the object it passed to ``emit``."""
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script), *map(str, args)],
                            env=hub.env, cwd=hub.cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"child failed:\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0][len("RESULT "):])


def run_cli(hub, *argv):
    return subprocess.run([sys.executable, "-m", "e5onnx.cli", *map(str, argv)], env=hub.env, cwd=hub.cwd,
                          capture_output=True, text=True, timeout=TIMEOUT)


def assert_model_folder_error(error, *needles):
    assert error is not None, "no error raised"
    assert "ModelFolderError" in error["mro"], error
    for needle in needles:
        assert needle in error["message"], (needle, error)


def test_load_from_cache_equals_local_folder(hub):
    out = run_child(hub, """
        import numpy as np
        from e5onnx.runtime.embedder import Embedder

        repo, local, commit = sys.argv[1], sys.argv[2], sys.argv[3]
        texts = json.loads(sys.argv[4])
        result = {}
        for variant in ("auto", "fp32", "optimized", "int8"):
            ref = Embedder.load(local, variant=variant, threads=1).embed(texts)
            for revision in (None, "main", commit):
                e = Embedder.load(repo, variant=variant, threads=1, revision=revision)
                v = e.embed(texts)
                result[f"{variant}@{revision}"] = {
                    "variant": e.variant, "diff": float(np.abs(v - ref).max()), "shape": list(v.shape),
                    "model_path": str(e.model_path), "manifest_equal": e.manifest.to_dict() == json.load(
                        open(os.path.join(local, "manifest.json"), encoding="utf-8")),
                }
        emit(result)
        """, EXPORT_REPO, hub.export, hub.commit, json.dumps(TEXTS))
    snapshot = (hub.cache / "models--someorg--tiny-e5onnx" / "snapshots" / hub.commit).resolve()
    assert len(out) == 12
    for key, row in out.items():
        variant = key.split("@")[0]
        assert row["variant"] == ("int8" if variant == "auto" else variant), key
        assert row["diff"] == 0.0, key
        assert row["shape"][0] == len(TEXTS), key
        assert row["manifest_equal"], key
        assert Path(row["model_path"]).parent.resolve() == snapshot, key


def test_partial_snapshot_needs_only_the_chosen_variant(hub):
    out = run_child(hub, """
        from e5onnx.runtime.embedder import Embedder

        repo = sys.argv[1]
        e = Embedder.load(repo, threads=1)
        emit({"variant": e.variant, "shape": list(e.embed(["hello world"]).shape),
              "fp32": error_of(Embedder.load, repo, variant="fp32", threads=1),
              "optimized": error_of(Embedder.load, repo, variant="optimized", threads=1),
              "not_export": error_of(Embedder.load, sys.argv[2], threads=1)})
        """, PARTIAL_REPO, SOURCE_REPO)
    assert out["variant"] == "int8"
    assert out["shape"][0] == 1
    assert_model_folder_error(out["fp32"], PARTIAL_REPO, "model.onnx")
    assert_model_folder_error(out["optimized"], PARTIAL_REPO, "model_optimized.onnx")
    # a plain Hugging Face model repo (no manifest) is not an e5onnx export
    assert_model_folder_error(out["not_export"], SOURCE_REPO, "manifest.json")


def test_corrupt_cached_file_is_an_integrity_error(hub):
    out = run_child(hub, """
        from e5onnx.runtime.embedder import Embedder

        repo = sys.argv[1]
        emit({"verified": error_of(Embedder.load, repo, variant="optimized", threads=1),
              "fp32": error_of(Embedder.load, repo, variant="fp32", threads=1)})
        """, CORRUPT_REPO)
    assert out["verified"] is not None and out["verified"]["type"] == "IntegrityError", out
    assert "sha256" in out["verified"]["message"]
    assert "model_optimized.onnx" in out["verified"]["message"]
    assert out["fp32"] is None  # the other variants are intact


def test_variant_without_file_key_behaves_like_local_folder(hub):
    # the manifest's int8 entry has no "file": the default name model_int8.onnx is fetched and loaded
    out = run_child(hub, """
        import numpy as np
        from e5onnx.runtime.embedder import Embedder

        texts = json.loads(sys.argv[3])
        local = Embedder.load(sys.argv[2], threads=1)
        remote = Embedder.load(sys.argv[1], threads=1)
        emit({"local": local.variant, "hub": remote.variant, "file": remote.model_path.name,
              "diff": float(np.abs(remote.embed(texts) - local.embed(texts)).max())})
        """, NOFILE_REPO, hub.nofile, json.dumps(TEXTS))
    assert out == {"local": "int8", "hub": "int8", "file": "model_int8.onnx", "diff": 0.0}


def test_repo_not_in_cache(hub):
    out = run_child(hub, """
        from e5onnx.runtime.embedder import Embedder

        emit({"absent": error_of(Embedder.load, sys.argv[1], threads=1),
              "absent_rev": error_of(Embedder.load, sys.argv[1], threads=1, revision="0" * 40),
              "bad_branch": error_of(Embedder.load, sys.argv[2], threads=1, revision="no-such-branch"),
              "bad_commit": error_of(Embedder.load, sys.argv[2], threads=1, revision="f" * 40)})
        """, ABSENT_REPO, EXPORT_REPO)
    assert_model_folder_error(out["absent"], ABSENT_REPO)
    assert_model_folder_error(out["absent_rev"], ABSENT_REPO, "0" * 40)
    assert_model_folder_error(out["bad_branch"], EXPORT_REPO, "no-such-branch")
    assert_model_folder_error(out["bad_commit"], EXPORT_REPO, "f" * 40)
    for error in out.values():
        assert error["type"] == "ModelFolderError", error


@pytest.mark.parametrize("model", ["not a/valid//id", "a/b/c", "/no/such/folder", "../no-such-folder",
                                   "org/name with space", "-leading-dash"])
def test_neither_path_nor_repo_id(hub, model):
    out = run_child(hub, """
        from e5onnx.runtime.embedder import Embedder

        emit(error_of(Embedder.load, sys.argv[1], threads=1))
        """, model)
    assert_model_folder_error(out, model)
    assert out["type"] == "ModelFolderError"
    assert "no such folder" in out["message"] and "not a Hugging Face repo id" in out["message"]


@pytest.mark.parametrize("model", ["a/..", "a--b/c", "org/name..x", "x" * 120])
def test_repo_id_rejected_by_huggingface_hub(hub, model):
    # passes e5onnx's own syntax check but not huggingface-hub's validation: still a ModelFolderError
    out = run_child(hub, """
        from e5onnx.runtime.embedder import Embedder

        emit(error_of(Embedder.load, sys.argv[1], threads=1))
        """, model)
    assert_model_folder_error(out, model)
    assert out["type"] == "ModelFolderError"


def test_cli_info_from_cache(hub):
    result = run_cli(hub, "info", EXPORT_REPO)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["embedding_dim"] == 32  # the tiny BERT's hidden size
    assert summary["max_length"] == 128
    assert set(summary["variants"]) == {"fp32", "optimized", "int8"}
    assert summary["variants"]["optimized"]["parity_passed"] is True
    assert summary["variants"]["fp32"]["size_bytes"] == (hub.export / "model.onnx").stat().st_size

    full = run_cli(hub, "info", EXPORT_REPO, "--full")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout) == json.loads((hub.export / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("command", [["info", ABSENT_REPO], ["embed", ABSENT_REPO, "hello world"]],
                         ids=["info", "embed"])
def test_cli_with_a_repo_not_in_cache_is_a_one_line_error(hub, command):
    result = run_cli(hub, *command)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and ABSENT_REPO in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_embed_from_cache(hub):
    import numpy as np

    from e5onnx.runtime.embedder import Embedder

    texts = ["hello world", "paris is a city"]
    result = run_cli(hub, "embed", EXPORT_REPO, *texts, "--threads", "1")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    want = Embedder.load(hub.export, threads=1).embed(texts)  # the local folder, same variant (auto: int8)
    assert np.abs(np.array([r["embedding"] for r in rows], np.float32) - want).max() < 1e-6


# --------------------------------------------------------------------------------------------------------
# Export from a Hub id
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_export(hub):
    """Export ``someorg/tiny-bert`` from the cache, and try an id the cache lacks, in one child."""
    parent = hub.root / "exports"
    parent.mkdir()
    out = run_child(hub, """
        from e5onnx.export import export_model

        parent = sys.argv[1]
        manifest = export_model(sys.argv[2], os.path.join(parent, "tiny"), max_length=128, threads=1)
        missing = error_of(export_model, sys.argv[3], os.path.join(parent, "missing"), max_length=128)
        emit({"manifest": manifest.to_dict(), "missing": missing})
        """, parent, SOURCE_REPO, ABSENT_REPO)
    out["parent"] = parent
    return out


def test_export_from_hub_id_records_the_source(hub, hub_export):
    manifest = hub_export["manifest"]
    source = manifest["source"]
    assert source["id"] == SOURCE_REPO
    assert source["revision"] == hub.source_commit
    assert source["path"] is None
    weights = (hub.source / "model.safetensors").read_bytes()
    assert source["weights"]["model.safetensors"] == {
        "sha256": hashlib.sha256(weights).hexdigest(), "size": len(weights)}

    folder = hub_export["parent"] / "tiny"
    assert json.loads((folder / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert manifest["max_length"] == 128
    for name, entry in manifest["files"].items():
        assert sha256_file(folder / name) == entry["sha256"]


def test_export_from_hub_id_matches_local_export(hub, hub_export):
    import numpy as np

    from e5onnx.runtime.embedder import Embedder

    ours = Embedder.load(hub_export["parent"] / "tiny", variant="fp32", threads=1).embed(TEXTS)
    ref = Embedder.load(hub.export, variant="fp32", threads=1).embed(TEXTS)
    assert np.abs(ours - ref).max() < 1e-5


def test_export_of_missing_hub_id_is_an_export_error(hub_export):
    error = hub_export["missing"]
    assert error is not None and "ExportError" in error["mro"], error
    assert ABSENT_REPO in error["message"]
    parent = hub_export["parent"]
    assert not (parent / "missing").exists()
    assert sorted(p.name for p in parent.iterdir()) == ["tiny"]  # no partial folders either
