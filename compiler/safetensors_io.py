"""Minimal safetensors reader (mmap, zero-copy) and streaming writer (atomic).

File format (https://github.com/huggingface/safetensors):
    [0:8)        u64 little endian N = header length in bytes
    [8:8+N)      JSON header {name: {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
                              "__metadata__": {str: str}}  (space-padded; we pad to 8 bytes)
    [8+N:)       raw little-endian tensor data; data_offsets are relative to 8+N, the tensors
                 tile the data area exactly (no gap, no overlap), row-major (C order).
BF16 has no numpy dtype: it is exposed as its raw bits (uint16); `bf16_to_float32` upcasts
exactly (bits << 16), `float32_to_bf16` rounds to nearest even.

Memory: the reader maps the file; arrays it returns are views into the mapping (no copy,
pages are read on first touch and can be evicted by the OS). The writer holds one tensor
(or one chunk of one) at a time.
"""
from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# safetensors dtype name -> numpy storage dtype (BF16 stored as its uint16 bit pattern).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("<u1"), "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"), "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit
_ALIGN = 8


class SafetensorsError(ValueError):
    """A malformed safetensors file; the message names the file and, when known, the key."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                  # safetensors dtype name, e.g. "BF16", "U8"
    shape: tuple[int, ...]
    begin: int                  # byte offsets relative to the start of the data area
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


# ---- bf16 <-> float32 ------------------------------------------------------------------------

def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact upcast: a bf16 is the upper 16 bits of the float32 with the same value."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bf16 bits, nearest even (as torch does); NaN stays a quiet NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    t = u >> 16                      # one temporary, updated in place (this runs on GBs)
    t &= 1
    t += 0x7FFF
    t += u                           # u + 0x7FFF + lsb: carries into the kept bits iff > half
    t >>= 16
    rounded = t.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def to_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """A stored float tensor (BF16 bits, F16, F32, F64) as float32 (exact except F64)."""
    if dtype == "BF16":
        return bf16_to_float32(array)
    if dtype in FLOAT_DTYPES:
        return np.asarray(array, dtype=np.float32)
    raise SafetensorsError(f"dtype {dtype} is not a float type")


# ---- reading ---------------------------------------------------------------------------------

def read_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Parse and validate the header: (tensors, metadata, data_start). Reads only the header."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path}: file too short for a safetensors header ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise SafetensorsError(f"{path}: header length {n} exceeds the file size {size} "
                                       f"(truncated or not a safetensors file)")
            raw = f.read(n)
    except FileNotFoundError:
        raise SafetensorsError(f"{path}: no such file") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    tensors = {name: _parse_entry(path, name, entry) for name, entry in header.items()}
    _check_tiling(path, tensors, size - 8 - n)
    return tensors, metadata, 8 + n


def _parse_entry(path: Path, name: str, entry: Any) -> TensorInfo:
    def bad(why: str) -> SafetensorsError:
        return SafetensorsError(f"{path}: tensor {name!r}: {why}")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"entry must have exactly dtype, shape, data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in STORAGE_DTYPES:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise bad(f"shape must be a list of non-negative integers, got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_uint, offsets))):
        raise bad(f"data_offsets must be [begin, end], got {offsets!r}")
    begin, end = offsets
    itemsize = STORAGE_DTYPES[dtype].itemsize
    expected = math.prod(shape) * itemsize
    if end - begin != expected:
        raise bad(f"data_offsets {offsets} span {end - begin} bytes, dtype {dtype} shape {shape} "
                  f"needs {expected}")
    if begin % itemsize:
        raise bad(f"data offset {begin} is misaligned for {dtype} ({itemsize}-byte items)")
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _check_tiling(path: Path, tensors: Mapping[str, TensorInfo], data_size: int) -> None:
    """Tensors must tile [0, data_size) exactly: sorted by offset, each starting where the last ended."""
    position, previous = 0, None
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.end > data_size:
            raise SafetensorsError(f"{path}: tensor {t.name!r}: data ends at byte {t.end} of a "
                                   f"{data_size}-byte data area (truncated file)")
        if t.begin < position:
            raise SafetensorsError(f"{path}: tensor {t.name!r}: data_offsets overlap {previous!r}")
        if t.begin > position:
            raise SafetensorsError(f"{path}: tensor {t.name!r}: {t.begin - position}-byte gap "
                                   f"before its data (offsets do not tile the data area)")
        position, previous = t.end, t.name
    if position != data_size:
        raise SafetensorsError(f"{path}: {data_size - position} trailing bytes after the last "
                               f"tensor {previous!r}")


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class SafetensorsFile:
    """One mmap'd safetensors file. `array(name)` is a zero-copy read-only view in the stored
    dtype (BF16 as uint16 bits); `float32(name)` upcasts a float tensor (one copy)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tensors, self.metadata, self._data_start = read_header(self.path)
        data_size = max((t.end for t in self.tensors.values()), default=0)
        self._map: mmap.mmap | None = None
        self._data = np.zeros(0, np.uint8)
        if data_size:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._data = np.frombuffer(self._map, dtype=np.uint8, count=data_size,
                                       offset=self._data_start)

    def drop_pages(self) -> None:
        """Drop this file's mapped pages from the process RSS (they stay in the page cache and
        fault back in on the next read). Long streaming reads call it after each tensor, so
        a 13 GB checkpoint never accumulates in RSS."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise SafetensorsError(f"{self.path}: no tensor {name!r}") from None

    def array(self, name: str) -> np.ndarray:
        t = self.info(name)
        flat = self._data[t.begin:t.end].view(STORAGE_DTYPES[t.dtype])
        return np.asarray(flat).reshape(t.shape)

    def float32(self, name: str) -> np.ndarray:
        return to_float32(self.array(name), self.info(name).dtype)


# ---- writing ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * STORAGE_DTYPES[self.dtype].itemsize


def plan_layout(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None
                ) -> tuple[bytes, dict[str, TensorInfo]]:
    """Header bytes (length prefix included, padded to 8) and each tensor's offsets. Tensors
    are ordered by item size, largest first (stable), so every tensor is naturally aligned."""
    order = sorted(specs, key=lambda s: -STORAGE_DTYPES[s.dtype].itemsize)
    infos, header, position = {}, {}, 0
    for s in order:
        if s.dtype not in STORAGE_DTYPES:
            raise SafetensorsError(f"tensor {s.name!r}: unknown dtype {s.dtype!r}")
        if s.name in infos or s.name == "__metadata__":
            raise SafetensorsError(f"tensor {s.name!r}: duplicate or reserved name")
        infos[s.name] = TensorInfo(s.name, s.dtype, tuple(s.shape), position, position + s.nbytes)
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape),
                          "data_offsets": [position, position + s.nbytes]}
        position += s.nbytes
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGN)
    return struct.pack("<Q", len(text)) + text, infos


class SafetensorsWriter:
    """Streams tensors into `path` whose names, dtypes and shapes are known up front.

        with SafetensorsWriter(path, specs) as w:
            w.write("a", array)                  # whole tensor, or
            w.write("b", (chunk for chunk in ...))  # row-major chunks, in order
    Data goes to `path.partial`; on a clean exit every tensor must have been written and the
    file is renamed to `path` (atomic). On error the partial file is removed.
    """

    def __init__(self, path: str | Path, specs: Sequence[TensorSpec],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.header, self.infos = plan_layout(specs, metadata)
        self._written: set[str] = set()
        self._file = None

    def __enter__(self) -> "SafetensorsWriter":
        self._file = open(self.partial, "wb")
        self._file.write(self.header)
        return self

    def write(self, name: str, data: np.ndarray | Iterable[np.ndarray]) -> None:
        info = self.infos.get(name)
        if info is None:
            raise SafetensorsError(f"{self.path}: tensor {name!r} was not declared")
        if name in self._written:
            raise SafetensorsError(f"{self.path}: tensor {name!r} written twice")
        storage = STORAGE_DTYPES[info.dtype]
        chunks = [data] if isinstance(data, np.ndarray) else data
        self._file.seek(len(self.header) + info.begin)
        done = 0
        for chunk in chunks:
            chunk = _as_storage(self.path, name, chunk, info.dtype, storage)
            if done + chunk.nbytes > info.nbytes:
                raise SafetensorsError(f"{self.path}: tensor {name!r}: more data than its "
                                       f"shape {info.shape} holds")
            self._file.write(chunk.reshape(-1).view(np.uint8).data)
            done += chunk.nbytes
        if done != info.nbytes:
            raise SafetensorsError(f"{self.path}: tensor {name!r}: got {done} bytes, shape "
                                   f"{info.shape} {info.dtype} needs {info.nbytes}")
        self._written.add(name)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        missing = [n for n in self.infos if n not in self._written]
        if exc_type is None and missing:
            self.partial.unlink(missing_ok=True)
            raise SafetensorsError(f"{self.path}: tensor {missing[0]!r} declared but never written")
        if exc_type is not None:
            self.partial.unlink(missing_ok=True)
            return
        os.replace(self.partial, self.path)


def _as_storage(path: Path, name: str, chunk: np.ndarray, dtype: str, storage: np.dtype) -> np.ndarray:
    chunk = np.asarray(chunk)
    if dtype == "BF16" and chunk.dtype == np.float32:
        chunk = float32_to_bf16(chunk)
    elif chunk.dtype != storage:
        raise SafetensorsError(f"{path}: tensor {name!r}: data of dtype {chunk.dtype} for a "
                               f"{dtype} tensor")
    return np.ascontiguousarray(chunk)


def save_file(path: str | Path, tensors: Mapping[str, tuple[str, np.ndarray]],
              metadata: Mapping[str, str] | None = None) -> None:
    """Write {name: (safetensors dtype, array)} in one go (small files, tests)."""
    specs = [TensorSpec(n, d, tuple(np.shape(a))) for n, (d, a) in tensors.items()]
    with SafetensorsWriter(path, specs, metadata) as w:
        for name, (_, array) in tensors.items():
            w.write(name, array)
