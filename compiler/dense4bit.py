"""Dense weights -> Gemm4bit blocks (the op set's GEMM_4BIT layout), lazily, row block by row block.

  mxfp4: compiler/mxfp4.encode (OCP MX: shared exponent X = floor(log2 max|w|) - 2, nearest-even
         E2M1, saturating at 6): |error| <= max(|w|, 2^X) / 3 per element (half a grid gap,
         <= 0.25 max(|w|, 2^X), below 6 * 2^X; saturation above it, |w| < 8 * 2^X).
  int4:  compiler/mxfp4.quantize_int4 (symmetric, scale max|w| / 7 rounded to float16, the op
         set's int4 format, then q in [-7, 7] nearest to w / scale), nibble q + 8: the nearest
         value the block can hold, |error| <= scale / 2 (at the block max: 7x the float16
         rounding of the scale, < scale / 2^8 for normal float16 scales).
Both: [N, K/32, 16] bytes, byte j holds elements 2j (low nibble) and 2j+1 (high nibble).
Peak memory: one 32 MB group of output rows read from the checkpoint and its encoding
temporaries (~0.4 GB for MXFP4), see quantize_lazy.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from gptoss_edge.compiler import mxfp4
from gptoss_edge.compiler.graph.ir import Initializer, lazy

FORMATS = ("mxfp4", "int4")
BLOCK = mxfp4.BLOCK


def quantize_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (blocks uint8 [N, K/32, 16], E8M0 scales uint8 [N, K/32])."""
    return mxfp4.encode(w)


def quantize_int4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (blocks uint8 [N, K/32, 16], float16 scales [N, K/32])."""
    q, scale = mxfp4.quantize_int4(w, BLOCK, scale_dtype=np.float16)
    codes = (q.astype(np.int16) + 8).astype(np.uint8).reshape(w.shape[0], -1, BLOCK)
    return mxfp4.pack_nibbles(codes), scale


QUANTIZERS = {"mxfp4": quantize_mxfp4, "int4": quantize_int4}


def quantize_lazy(name: str, w_t: Initializer, fmt: str,
                  read_rows: Callable[[int, int], np.ndarray] | None = None,
                  group_bytes: int = 32 << 20) -> tuple[Initializer, Initializer]:
    """W^T [K, N] float -> lazy (blocks [N, K/32, 16] uint8, scales [N, K/32]) initializers.

    read_rows(start, stop): rows start..stop of W [N, K] itself (the checkpoint tensor,
    `weights.get(w_t.source, rows=...)`): peak memory = one group of group_bytes rows (32 MB)
    plus the encoder's temporaries (MXFP4 encodes in float64: ~12x the group).
    Without it W^T is materialized and transposed (twice the matrix; small models, tests)."""
    if fmt not in QUANTIZERS:
        raise ValueError(f"dense 4-bit format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    k, n = w_t.shape
    if k % BLOCK:
        raise ValueError(f"{w_t.name}: in_features {k} is not a multiple of {BLOCK}")
    quantize = QUANTIZERS[fmt]
    rows = max(1, group_bytes // (4 * k))
    kept_scales: list[np.ndarray] = []      # the blocks pass keeps the (1/32-size) scales

    def group(w, i: int) -> np.ndarray:
        stop = min(i + rows, n)
        part = read_rows(i, stop) if read_rows is not None else w[i:stop]
        if tuple(part.shape) != (stop - i, k):
            raise ValueError(f"{w_t.name} ({w_t.source}): rows {i}:{stop} have shape {tuple(part.shape)}, "
                             f"expected {(stop - i, k)}")
        return np.ascontiguousarray(part, dtype=np.float32)

    def chunks():
        w = None if read_rows is not None else w_t.array().T
        for i in range(0, n, rows):
            yield quantize(group(w, i))

    def blocks():
        kept_scales.clear()
        for b, s in chunks():
            kept_scales.append(s)
            yield b

    def scales():
        if sum(len(s) for s in kept_scales) == n:   # written right after the blocks: no 2nd pass
            yield from kept_scales
            kept_scales.clear()
        else:
            yield from (s for _, s in chunks())

    scale_dtype = np.uint8 if fmt == "mxfp4" else np.float16
    return (lazy(f"{name}_blocks", np.uint8, [n, k // BLOCK, 16], blocks, source=w_t.source),
            lazy(f"{name}_scales", scale_dtype, [n, k // BLOCK], scales, source=w_t.source))
