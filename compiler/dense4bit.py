"""Dense weights -> Gemm4bit blocks (the op set's GEMM_4BIT layout), lazily, row block by row block.

  mxfp4: compiler/mxfp4.encode (OCP MX: shared exponent X = floor(log2 max|w|) - 2, nearest-even
         E2M1, saturating at 6): |error| <= max(|w|, 2^X) / 3 per element (half a grid gap,
         <= 0.25 max(|w|, 2^X), below 6 * 2^X; saturation above it, |w| < 8 * 2^X).
  int4:  compiler/mxfp4.quantize_int4 (symmetric, scale max|w| / 7, q in [-7, 7]), the scale
         stored as float16 (the op set's int4 format), nibble q + 8: |error| <= scale / 2 plus
         7x the float16 rounding of the scale.
Both: [N, K/32, 16] bytes, byte j holds elements 2j (low nibble) and 2j+1 (high nibble).
Peak memory: the float32 matrix of one weight ([N, K]; lm_head of 20b: 2.3 GB) plus one block
of rows, like the ONNX Runtime 4-bit path.
"""
from __future__ import annotations

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
    q, scale = mxfp4.quantize_int4(w, BLOCK)
    codes = (q.astype(np.int16) + 8).astype(np.uint8).reshape(w.shape[0], -1, BLOCK)
    return mxfp4.pack_nibbles(codes), scale.astype(np.float16)


QUANTIZERS = {"mxfp4": quantize_mxfp4, "int4": quantize_int4}


def quantize_lazy(name: str, w_t: Initializer, fmt: str, rows: int = 4096) -> tuple[Initializer, Initializer]:
    """W^T [K, N] float -> lazy (blocks [N, K/32, 16] uint8, scales [N, K/32]) initializers."""
    if fmt not in QUANTIZERS:
        raise ValueError(f"dense 4-bit format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    k, n = w_t.shape
    if k % BLOCK:
        raise ValueError(f"{w_t.name}: in_features {k} is not a multiple of {BLOCK}")
    quantize = QUANTIZERS[fmt]

    def chunks():
        w = w_t.array().T                        # [N, K]
        for i in range(0, n, rows):
            yield quantize(np.ascontiguousarray(w[i:i + rows]))

    scale_dtype = np.uint8 if fmt == "mxfp4" else np.float16
    return (lazy(f"{name}_blocks", np.uint8, [n, k // BLOCK, 16], lambda: (b for b, _ in chunks()),
                 source=w_t.source),
            lazy(f"{name}_scales", scale_dtype, [n, k // BLOCK], lambda: (s for _, s in chunks()),
                 source=w_t.source))
