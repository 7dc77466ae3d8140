"""Engine directories: atomic writes, manifest contents, refusal of anything tampered."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gptoss_edge import engine_dir as ed
from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.opset import OPSET_VERSION

CFG = preset("tiny")
FIELDS = {
    "target": "onnxruntime",
    "model_config": CFG,
    "tokenizer": {"encoding": "o200k_harmony"},
    "bindings": {"inputs": ["input_ids"], "outputs": ["logits"]},
    "target_config": {"experts": "int4"},
}


def write_engine(out: Path, payload: bytes = b"weights" * 100, **kw) -> ed.EngineManifest:
    with ed.EngineDirWriter(out, progress=None, **kw) as w:
        w.path("model.onnx").write_bytes(b"onnx-graph")
        w.path("weights/experts.bin").write_bytes(payload)
        return w.finish(FIELDS)


def test_manifest_records_every_file_with_size_and_sha256(tmp_path):
    m = write_engine(tmp_path / "e")
    doc = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert doc["schema_version"] == ed.SCHEMA_VERSION
    assert doc["opset"]["version"] == OPSET_VERSION
    assert doc["model_config"] == CFG.to_dict()
    assert doc["target"] == "onnxruntime" and doc["target_config"] == {"experts": "int4"}
    assert doc["tokenizer"] == {"encoding": "o200k_harmony"}
    assert doc["bindings"]["inputs"] == ["input_ids"]
    payload = b"weights" * 100
    assert doc["files"]["weights/experts.bin"] == {
        "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert set(doc["files"]) == {"model.onnx", "weights/experts.bin"}
    loaded = ed.load_manifest(tmp_path / "e")
    assert loaded.config == CFG and loaded == m
    assert loaded.file("model.onnx").read_bytes() == b"onnx-graph"
    # No temp folder is left beside the engine.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_tampered_byte_is_refused_in_full_mode_only(tmp_path):
    write_engine(tmp_path / "e")
    f = tmp_path / "e" / "weights" / "experts.bin"
    data = bytearray(f.read_bytes())
    data[17] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ed.EngineDirError, match=r"experts\.bin: sha256 .* altered"):
        ed.load_manifest(tmp_path / "e")                 # default is full verification
    ed.load_manifest(tmp_path / "e", verify="sizes")    # same size: the fast mode cannot tell


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "weights" / "experts.bin").write_bytes(b"short"), r"experts\.bin: truncated"),
    (lambda d: (d / "model.onnx").write_bytes(b"onnx-graph!"), r"model\.onnx: grown"),
    (lambda d: (d / "model.onnx").unlink(), r"model\.onnx: listed in manifest.json but missing"),
    (lambda d: (d / "stray.bin").write_bytes(b"x"), r"stray\.bin: not listed"),
    (lambda d: (d / "manifest.json").unlink(), r"manifest\.json: missing"),
    (lambda d: (d / "manifest.json").write_text("{"), r"manifest\.json: not valid JSON"),
    (lambda d: os.symlink(d / "model.onnx", d / "link.onnx"), r"link\.onnx: not a regular file"),
])
@pytest.mark.parametrize("mode", ["full", "sizes"])
def test_damaged_directory_is_refused_naming_the_file(tmp_path, damage, message, mode):
    write_engine(tmp_path / "e")
    damage(tmp_path / "e")
    with pytest.raises(ed.EngineDirError, match=message):
        ed.load_manifest(tmp_path / "e", verify=mode)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
    (lambda d: d["opset"].update(version=OPSET_VERSION + 1), "op set .* does not match"),
    (lambda d: d.update(format="other"), "not a gptoss-edge engine manifest"),
    (lambda d: d["model_config"].update(bogus=1), "model_config: unknown key 'bogus'"),
    (lambda d: d.pop("target"), "missing field 'target'"),
    (lambda d: d["files"].update({"../escape": {"size": 1, "sha256": "0" * 64}}), "without '..'"),
])
def test_manifest_of_unknown_version_or_shape_is_refused(tmp_path, edit, message):
    write_engine(tmp_path / "e")
    mpath = tmp_path / "e" / "manifest.json"
    doc = json.loads(mpath.read_text())
    edit(doc)
    mpath.write_text(json.dumps(doc))
    with pytest.raises(ed.EngineDirError, match=message):
        ed.load_manifest(tmp_path / "e", verify=False)


def test_exception_while_writing_keeps_the_existing_engine(tmp_path):
    write_engine(tmp_path / "e", payload=b"old")
    with pytest.raises(RuntimeError, match="compile failed"):
        with ed.EngineDirWriter(tmp_path / "e", progress=None) as w:
            w.path("model.onnx").write_bytes(b"new, half written")
            raise RuntimeError("compile failed")
    m = ed.load_manifest(tmp_path / "e")
    assert (m.path / "weights" / "experts.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_leaving_without_finish_writes_nothing(tmp_path):
    with ed.EngineDirWriter(tmp_path / "e", progress=None) as w:
        w.path("model.onnx").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_killed_compile_leaves_old_engine_and_next_writer_cleans_up(tmp_path):
    write_engine(tmp_path / "e", payload=b"old")
    script = textwrap.dedent(f"""
        import os
        from gptoss_edge.engine_dir import EngineDirWriter
        w = EngineDirWriter({str(tmp_path / 'e')!r}, progress=None).__enter__()
        w.path("model.onnx").write_bytes(b"partial")
        os._exit(9)   # killed mid-compile: no cleanup runs
    """)
    rc = subprocess.run([sys.executable, "-c", script]).returncode
    assert rc == 9
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "e"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".e.tmp-")
    assert (ed.load_manifest(tmp_path / "e").path / "weights/experts.bin").read_bytes() == b"old"
    write_engine(tmp_path / "e", payload=b"new")        # the next compile of the same target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    assert (tmp_path / "e" / "weights" / "experts.bin").read_bytes() == b"new"


def test_overwrite_replaces_whole_directory(tmp_path):
    with ed.EngineDirWriter(tmp_path / "e", progress=None) as w:
        w.path("only-in-old.bin").write_bytes(b"x")
        w.finish(FIELDS)
    write_engine(tmp_path / "e")
    assert not (tmp_path / "e" / "only-in-old.bin").exists()
    ed.load_manifest(tmp_path / "e")
    with pytest.raises(ed.EngineDirError, match="exists"):
        with ed.EngineDirWriter(tmp_path / "e", overwrite=False):
            pass


@pytest.mark.parametrize("name", ["/abs.bin", "../up.bin", "a/../../b", "manifest.json", ""])
def test_bad_file_names_are_refused(tmp_path, name):
    with ed.EngineDirWriter(tmp_path / "e", progress=None) as w:
        with pytest.raises(ed.EngineDirError):
            w.path(name)


def test_missing_or_unknown_manifest_field_is_refused(tmp_path):
    with ed.EngineDirWriter(tmp_path / "e", progress=None) as w:
        w.path("a.bin").write_bytes(b"x")
        with pytest.raises(ed.EngineDirError, match="'bindings' is required"):
            w.finish({k: v for k, v in FIELDS.items() if k != "bindings"})
        with pytest.raises(ed.EngineDirError, match="unknown manifest field 'colour'"):
            w.finish({**FIELDS, "colour": "red"})
    assert not (tmp_path / "e").exists()


def test_hashing_streams_and_reports_progress_for_big_files(tmp_path, monkeypatch):
    monkeypatch.setattr(ed, "CHUNK", 1024)
    monkeypatch.setattr(ed, "PROGRESS_MIN_BYTES", 4096)
    data = os.urandom(10_000)
    (tmp_path / "big.bin").write_bytes(data)
    calls = []
    entry = ed.hash_file(tmp_path / "big.bin", name="big.bin",
                         progress=lambda n, done, total: calls.append((n, done, total)))
    assert entry == ed.FileEntry(10_000, hashlib.sha256(data).hexdigest())
    assert [c[1] for c in calls] == [1024 * i for i in range(1, 10)] + [10_000]
    assert all(c[0] == "big.bin" and c[2] == 10_000 for c in calls)
    (tmp_path / "small.bin").write_bytes(b"x" * 100)
    calls.clear()
    ed.hash_file(tmp_path / "small.bin", progress=lambda *a: calls.append(a))
    assert calls == []
