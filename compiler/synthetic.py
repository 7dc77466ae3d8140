"""Synthetic gpt-oss checkpoints in the exact released format, with seeded random weights.

    write_checkpoint(out, cfg, layout="hf", seed=0)

* Formats: hf -> config.json + model.safetensors (or model-0000i-of-0000n.safetensors shards of
  at most `shard_bytes` + model.safetensors.index.json); original -> original/config.json +
  original/model.safetensors. Dtypes as released: BF16 for every dense tensor, norm, sink and
  bias (expert biases included), U8 MXFP4 blocks/scales.
* Same model for every layout: each canonical tensor is drawn from its own generator seeded by
  (seed, crc32(canonical name)), in fixed chunks, so hf and original checkpoints of one seed
  hold bit-identical weights (the original qkv is the q, k, v draws stacked).
* Scale (activations stay O(1) through any depth, logits informative): projections and router
  N(0, 1/sqrt(fan_in)), embeddings N(0, 1), lm_head N(0, 2/sqrt(H)), norms 1 + N(0, 0.05),
  sinks N(0, 1), biases N(0, 0.05); MXFP4 experts: nibbles drawn like a N(0, 2) sample rounded
  onto the E2M1 grid, block exponents chosen so elements have std ~1/sqrt(fan_in)
  (2^-7 for fan_in 2880, jittered by ±1 per block).
* Streaming: one chunk (one expert, or 8192 rows) in memory at a time; files are written into
  a temporary directory renamed to `out` at the end, so a half-written checkpoint never exists.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .checkpoint import HF, INDEX_NAME, ORIGINAL, SINGLE_NAME
from .checkpoint_schema import Expected, canonical_tensors, original_source, original_tensors
from .config import ModelConfig
from .mxfp4 import E2M1_MAGNITUDES
from .safetensors_io import SafetensorsWriter, TensorSpec

DEFAULT_SHARD_BYTES = 5_000_000_000
ROWS_PER_CHUNK = 8192
FORMAT_METADATA = {"format": "pt"}   # what torch-saved safetensors carry; transformers checks it
CODE_STD = 2.0                       # std of the pre-rounding E2M1 sample, in grid units

Progress = Callable[[int, int, str], None]   # (bytes done, bytes total, tensor name)
Chunks = Callable[[], Iterator[np.ndarray]]


class CheckpointExistsError(FileExistsError):
    pass


# ---- per-tensor generators ---------------------------------------------------------------------

def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _normal_chunks(rng: np.random.Generator, shape: tuple[int, ...], mean: float, std: float
                   ) -> Iterator[np.ndarray]:
    rows, rest = shape[0], shape[1:]
    for r0 in range(0, rows, ROWS_PER_CHUNK):
        n = min(ROWS_PER_CHUNK, rows - r0)
        chunk = rng.standard_normal((n,) + rest, dtype=np.float32)
        chunk *= np.float32(std)
        chunk += np.float32(mean)
        yield chunk


def _nibble_probabilities() -> np.ndarray:
    """P(code) for codes 0..15 when N(0, CODE_STD) is rounded onto E2M1 (nearest, saturating)."""
    grid = E2M1_MAGNITUDES.astype(np.float64)
    edges = np.concatenate([[0.0], (grid[1:] + grid[:-1]) / 2, [np.inf]])
    cdf = np.array([math.erf(e / (CODE_STD * math.sqrt(2))) if np.isfinite(e) else 1.0 for e in edges])
    p_mag = np.diff(cdf)                       # P(|x| rounds to magnitude m)
    p = np.zeros(16)
    p[0] = p_mag[0]
    p[1:8] = p_mag[1:] / 2
    p[9:16] = p_mag[1:] / 2
    return p


def _byte_table() -> np.ndarray:
    """uint16 uniform -> byte whose two nibbles are independent draws of _nibble_probabilities."""
    p = _nibble_probabilities()
    p_byte = np.outer(p, p).reshape(-1)        # index hi * 16 + lo
    cdf = np.cumsum(p_byte) * 65536
    return np.searchsorted(cdf, np.arange(65536) + 0.5).clip(0, 255).astype(np.uint8)


_BYTE_TABLE = _byte_table()
_CODE_RMS = float(np.sqrt((_nibble_probabilities() * np.concatenate(
    [E2M1_MAGNITUDES, E2M1_MAGNITUDES]) ** 2).sum()))


_JITTER = np.array([-1, 0, 0, 1], dtype=np.int16)


def _block_chunks(rng: np.random.Generator, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    for _ in range(shape[0]):                  # one expert at a time
        yield _BYTE_TABLE[rng.integers(0, 65536, size=shape[1:], dtype=np.uint16)]


def _scale_chunks(rng: np.random.Generator, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    fan_in = shape[-1] * 32
    center = round(math.log2(1.0 / (math.sqrt(fan_in) * _CODE_RMS)))
    for _ in range(shape[0]):
        jitter = _JITTER[rng.integers(0, 4, size=shape[1:], dtype=np.uint8)]   # -1, 0, 0, +1
        yield (127 + center + jitter).astype(np.uint8)


def canonical_chunks(cfg: ModelConfig, name: str, seed: int) -> Iterator[np.ndarray]:
    """The chunks (float32 or uint8, first-axis pieces) of canonical tensor `name`."""
    shape = canonical_tensors(cfg)[name].shape
    rng = _rng(seed, name)
    if name.endswith("_blocks"):
        return _block_chunks(rng, shape)
    if name.endswith("_scales"):
        return _scale_chunks(rng, shape)
    if name.endswith(("layernorm.weight", "model.norm.weight")):
        return _normal_chunks(rng, shape, 1.0, 0.05)
    if name.endswith("sinks") or name == "model.embed_tokens.weight":
        return _normal_chunks(rng, shape, 0.0, 1.0)
    if name == "lm_head.weight":
        return _normal_chunks(rng, shape, 0.0, 2.0 / math.sqrt(shape[1]))
    if name.endswith("bias"):
        return _normal_chunks(rng, shape, 0.0, 0.05)
    return _normal_chunks(rng, shape, 0.0, 1.0 / math.sqrt(shape[1]))


def canonical_tensor(cfg: ModelConfig, name: str, seed: int) -> np.ndarray:
    """Whole canonical tensor as generated (float32 before the bf16 rounding, or uint8)."""
    shape = canonical_tensors(cfg)[name].shape
    return np.concatenate([c.reshape((-1,) + shape[1:]) for c in canonical_chunks(cfg, name, seed)]
                          ).reshape(shape)


# ---- file plans --------------------------------------------------------------------------------

def _plan_hf(cfg: ModelConfig, seed: int, shard_bytes: int
             ) -> list[tuple[str, list[tuple[str, Expected, Chunks]]]]:
    tensors = [(n, e, (lambda n=n: canonical_chunks(cfg, n, seed)))
               for n, e in canonical_tensors(cfg).items()]
    total = sum(_nbytes(e) for _, e, _ in tensors)
    if total <= shard_bytes:
        return [(SINGLE_NAME, tensors)]
    shards: list[list] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + _nbytes(t[1]) > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += _nbytes(t[1])
    n = len(shards)
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", s) for i, s in enumerate(shards)]


def _plan_original(cfg: ModelConfig, seed: int) -> list[tuple[str, list[tuple[str, Expected, Chunks]]]]:
    parts: dict[str, list[str]] = {}          # stored key -> canonical names stacked into it
    for name in canonical_tensors(cfg):
        parts.setdefault(original_source(cfg, name).key, []).append(name)
    expected = original_tensors(cfg)

    def chunks(names: list[str]) -> Iterator[np.ndarray]:
        for name in names:                    # q, k, v rows stacked (already in that order)
            yield from canonical_chunks(cfg, name, seed)

    tensors = [(k, expected[k], (lambda names=names: chunks(names))) for k, names in parts.items()]
    return [(f"{ORIGINAL}/{SINGLE_NAME}", tensors)]


def _nbytes(e: Expected) -> int:
    return math.prod(e.shape) * (2 if e.dtype == "BF16" else 1)


# ---- writing -------------------------------------------------------------------------------------

def checkpoint_bytes(cfg: ModelConfig) -> int:
    """Bytes of tensor data in a checkpoint of cfg (either layout; headers not counted)."""
    return sum(_nbytes(e) for e in canonical_tensors(cfg).values())


def write_checkpoint(out: str | Path, cfg: ModelConfig, layout: str = HF, seed: int = 0,
                     shard_bytes: int = DEFAULT_SHARD_BYTES,
                     progress: Progress | None = None) -> Path:
    """Write a synthetic checkpoint of `cfg` to the new directory `out` (must not exist).
    Returns `out`. Peak memory: one chunk (one expert or 8192 rows) plus a bf16 copy of it."""
    out = Path(out)
    if layout not in (HF, ORIGINAL):
        raise ValueError(f"unknown layout {layout!r}; use {HF!r} or {ORIGINAL!r}")
    if out.exists():
        raise CheckpointExistsError(f"{out}: already exists; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        plan = _plan_hf(cfg, seed, shard_bytes) if layout == HF else _plan_original(cfg, seed)
        _write_configs(tmp, cfg, layout)
        _write_files(tmp, plan, progress)
        if layout == HF and len(plan) > 1:
            _write_index(tmp, plan)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_configs(tmp: Path, cfg: ModelConfig, layout: str) -> None:
    if layout == HF:
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2) + "\n")
    else:
        (tmp / ORIGINAL).mkdir(parents=True)
        (tmp / ORIGINAL / "config.json").write_text(json.dumps(cfg.to_original_dict(), indent=2) + "\n")


def _write_files(tmp: Path, plan, progress: Progress | None) -> None:
    total = sum(_nbytes(e) for _, tensors in plan for _, e, _ in tensors)
    done = 0
    for rel, tensors in plan:
        specs = [TensorSpec(k, e.dtype, e.shape) for k, e, _ in tensors]
        with SafetensorsWriter(tmp / rel, specs, FORMAT_METADATA) as w:
            for key, e, chunks in tensors:
                w.write(key, chunks())
                done += _nbytes(e)
                if progress:
                    progress(done, total, key)


def _write_index(tmp: Path, plan) -> None:
    weight_map = {k: rel for rel, tensors in plan for k, _, _ in tensors}
    total = sum(_nbytes(e) for _, tensors in plan for _, e, _ in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
