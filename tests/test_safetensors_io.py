"""Our safetensors reader/writer against the reference `safetensors` library and torch's bf16."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as reference_save
from safetensors.torch import load_file as reference_load_torch

from gptoss_edge.compiler.safetensors_io import (SafetensorsError, SafetensorsFile,
                                                 SafetensorsWriter, TensorSpec, bf16_to_float32,
                                                 float32_to_bf16, save_file)


def sample_tensors(rng: np.random.Generator) -> dict[str, tuple[str, np.ndarray]]:
    return {
        "a.f32": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
        "b.u8": ("U8", rng.integers(0, 256, (7,), dtype=np.uint8)),
        "c.bf16": ("BF16", float32_to_bf16(rng.standard_normal((4, 3)).astype(np.float32))),
        "d.i64": ("I64", np.arange(3, dtype=np.int64)),
        "e.f16": ("F16", rng.standard_normal(5).astype(np.float16)),
        "f.empty": ("F32", np.zeros((0, 4), np.float32)),
    }


def test_round_trip_and_reference_library_reads_ours(tmp_path):
    tensors = sample_tensors(np.random.default_rng(0))
    path = tmp_path / "x.safetensors"
    save_file(path, tensors, {"format": "pt"})
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "pt"}
    for name, (dtype, array) in tensors.items():
        assert f.info(name).dtype == dtype
        assert np.array_equal(f.array(name), array)
    ref = reference_load_torch(path)
    assert ref["c.bf16"].dtype == torch.bfloat16
    assert np.array_equal(ref["c.bf16"].float().numpy(), f.float32("c.bf16"))
    assert np.array_equal(ref["a.f32"].numpy(), tensors["a.f32"][1])
    assert np.array_equal(ref["b.u8"].numpy(), tensors["b.u8"][1])


def test_we_read_the_reference_library_and_views_are_zero_copy(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((64, 32)).astype(np.float32),
              "b": rng.integers(0, 256, (10, 16), dtype=np.uint8)}
    path = tmp_path / "ref.safetensors"
    reference_save(arrays, str(path))
    f = SafetensorsFile(path)
    w = f.array("w")
    assert np.array_equal(w, arrays["w"]) and np.array_equal(f.array("b"), arrays["b"])
    assert not w.flags.writeable and not w.flags.owndata      # a view into the mapping


def test_bf16_conversions_match_torch():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(10000).astype(np.float32) * 1e3,
                        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40, 1.00390625], np.float32)])
    ours = float32_to_bf16(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ours, theirs)                        # round to nearest even, like torch
    assert np.array_equal(bf16_to_float32(ours), torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    assert np.isnan(bf16_to_float32(float32_to_bf16(np.array([np.nan], np.float32))))


def test_streaming_writer_chunks_any_order_and_atomic(tmp_path):
    specs = [TensorSpec("big", "BF16", (10, 4)), TensorSpec("small", "U8", (3,))]
    path = tmp_path / "s.safetensors"
    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    with SafetensorsWriter(path, specs) as w:
        w.write("small", np.array([1, 2, 3], np.uint8))
        assert not path.exists()                              # only the .partial so far
        w.write("big", (values[i:i + 3] for i in range(0, 10, 3)))
    f = SafetensorsFile(path)
    assert np.array_equal(f.float32("big"), values)
    assert not (tmp_path / "s.safetensors.partial").exists()


def test_writer_failure_leaves_nothing(tmp_path):
    path = tmp_path / "s.safetensors"
    with pytest.raises(RuntimeError):
        with SafetensorsWriter(path, [TensorSpec("a", "F32", (2,))]) as w:
            raise RuntimeError("generator died")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SafetensorsError, match="'b' declared but never written"):
        with SafetensorsWriter(path, [TensorSpec("a", "F32", (2,)), TensorSpec("b", "U8", (1,))]) as w:
            w.write("a", np.zeros(2, np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data,match", [
    (np.zeros(3, np.float32), "got 12 bytes"),
    (np.zeros(5, np.float32), "more data"),
    (np.zeros(4, np.int32), "dtype int32"),
])
def test_writer_rejects_wrong_data(tmp_path, data, match):
    with pytest.raises(SafetensorsError, match=match):
        with SafetensorsWriter(tmp_path / "x.safetensors", [TensorSpec("a", "F32", (4,))]) as w:
            w.write("a", data)


def write_raw(path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("header,data,match", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4,
     r"tensor 'w'.*truncated"),
    ({"w": {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2,
     r"tensor 'w'.*unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12,
     r"tensor 'b'.*overlap 'a'"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}}, b"\0" * 5,
     r"tensor 'b'.*misaligned"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8,
     r"tensor 'w'.*needs 12"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16,
     r"tensor 'w'.*gap"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 9,
     r"trailing bytes"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8,
     r"tensor 'w'.*shape"),
])
def test_reader_rejects_malformed_headers(tmp_path, header, data, match):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, data)
    with pytest.raises(SafetensorsError, match=match) as e:
        SafetensorsFile(path)
    assert str(path) in str(e.value)


def test_reader_rejects_bad_json_and_short_files(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        SafetensorsFile(path)
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(SafetensorsError, match="exceeds the file size"):
        SafetensorsFile(path)
    path.write_bytes(b"\1\2")
    with pytest.raises(SafetensorsError, match="too short"):
        SafetensorsFile(path)


def test_drop_pages_releases_rss_and_reads_stay_correct(tmp_path):
    """drop_pages() is what keeps compile RSS bounded: after it, the mapped pages are gone
    from this process (RssFile falls back) and a later read faults the same bytes back in."""
    data = np.random.default_rng(0).integers(0, 255, size=(64, 2**16), dtype=np.uint8)  # 4 MiB
    path = tmp_path / "big.safetensors"
    reference_save({"w": data}, str(path))
    f = SafetensorsFile(path)

    def rss_file_kib() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        pytest.skip("no RssFile in /proc/self/status")

    before = rss_file_kib()
    assert int(f.array("w").sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))   # faults 4 MiB in
    touched = rss_file_kib()
    f.drop_pages()
    dropped = rss_file_kib()
    # 4 MiB faulted in, then released; margins (1 MiB) absorb unrelated file-backed pages.
    assert touched - before >= 3 * 1024
    assert touched - dropped >= 3 * 1024
    np.testing.assert_array_equal(f.array("w"), data)
