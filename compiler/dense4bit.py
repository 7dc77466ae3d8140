"""Dense weights -> Gemm4bit blocks (the op set's GEMM_4BIT layout), lazily, row block by row block.

  mxfp4: per block of 32 the smallest power-of-two scale 2^e with max|w| / 2^e <= 6 (no clipping;
         E8M0 byte e + 127), each element rounded to the nearest E2M1 value.
  int4:  symmetric, scale = max|w| / 7 stored as float16, q = clip(rint(w / scale), -8, 7),
         nibble q + 8.
Both: [N, K/32, 16] bytes, byte j holds elements 2j (low nibble) and 2j+1 (high nibble).
Error (per element): at most half a quantization step of its block: mxfp4 step <= 2^e
(relative to the block max: <= 1/6 .. 1/3 in the top binade), int4 step = max|w| / 7.
Peak memory: the float32 matrix of one weight ([N, K]; lm_head of 20b: 2.3 GB) plus one block
of rows, like the ONNX Runtime 4-bit path.
"""
from __future__ import annotations

import numpy as np

from gptoss_edge.compiler.graph.ir import Initializer, lazy

FORMATS = ("mxfp4", "int4")
BLOCK = 32
_E2M1_MIDPOINTS = np.array([.25, .75, 1.25, 1.75, 2.5, 3.5, 5.0])   # between [0,.5,1,1.5,2,3,4,6]


def _pack(codes: np.ndarray) -> np.ndarray:
    """[N, K] nibble codes 0..15 -> [N, K/32, 16] bytes."""
    c = codes.astype(np.uint8)
    packed = c[:, 0::2] | (c[:, 1::2] << 4)
    return packed.reshape(c.shape[0], -1, 16)


def quantize_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (blocks uint8 [N, K/32, 16], E8M0 scales uint8 [N, K/32])."""
    n, k = w.shape
    wb = w.astype(np.float64).reshape(n, k // BLOCK, BLOCK)
    amax = np.abs(wb).max(axis=-1)
    e = np.ceil(np.log2(np.where(amax > 0, amax, 1.0) / 6.0))
    e = np.clip(np.where(amax > 0, e, -127), -127, 127)
    x = wb / np.ldexp(1.0, e.astype(np.int32))[..., None]
    mag = np.searchsorted(_E2M1_MIDPOINTS, np.abs(x), side="left")
    codes = (mag | np.where(x < 0, 8, 0)).reshape(n, k)
    return _pack(codes), (e + 127).astype(np.uint8)


def quantize_int4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (blocks uint8 [N, K/32, 16], float16 scales [N, K/32])."""
    n, k = w.shape
    wb = w.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
    scale = (np.abs(wb).max(axis=-1) / 7.0).astype(np.float16)
    safe = np.where(scale > 0, scale, 1).astype(np.float32)
    q = np.clip(np.rint(wb / safe[..., None]), -8, 7).astype(np.int16)
    return _pack((q + 8).reshape(n, k)), scale


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
