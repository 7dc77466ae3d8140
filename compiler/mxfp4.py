"""MXFP4 codecs (OCP Microscaling, as gpt-oss ships its expert weights) and generic repacks.

Bit layout of one MXFP4 block (32 elements along the input dimension):
    blocks[..., b, j] (uint8, j = 0..15) holds elements 2j (low nibble, bits 0-3) and
                                         2j+1 (high nibble, bits 4-7) of block b
    nibble = S EEM: bit 3 = sign, bits 0-2 index the E2M1 magnitudes
             [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    scales[..., b] (uint8) = E8M0 shared exponent s: the block's scale is 2^(s - 127)
    value = (-1)^S * E2M1[EEM] * 2^(s - 127)
So blocks [..., nb, 16] + scales [..., nb] describe float[..., nb * 32].

Repacks (pure functions, plain arrays; target-specific packing lives with each target):
    int8, block 32, lossless: q = 2 * E2M1 value (in {0, ±1, ±2, ±3, ±4, ±6, ±8, ±12}),
        block scale 2^(s - 128): q * scale == the MXFP4 value exactly.
    int4, symmetric, per-block scale amax / 7, q in [-7, 7]: lossy (E2M1 has 15 distinct
        values spanning 0.5..6, int4 only uniform steps).

Everything works on any leading shape; callers process one expert at a time
(`decode(blocks[e], scales[e])`) so memory stays bounded by one expert.
"""
from __future__ import annotations

import numpy as np

BLOCK = 32                     # elements per MXFP4 block
BYTES_PER_BLOCK = BLOCK // 2   # two 4-bit elements per byte
SCALE_BIAS = 127               # E8M0 exponent bias
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
# All 16 nibble codes (bit 3 = sign); -0.0 for code 8.
E2M1_VALUES = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES])
E2M1_EMAX = 2                  # exponent of the largest E2M1 normal (6 = 1.5 * 2^2)


def _check_pair(blocks: np.ndarray, scales: np.ndarray) -> None:
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise ValueError(f"MXFP4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.shape[-1:] != (BYTES_PER_BLOCK,) or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} must be scales {scales.shape} + "
                         f"({BYTES_PER_BLOCK},)")


def unpack_nibbles(blocks: np.ndarray) -> np.ndarray:
    """uint8 [..., nb, 16] -> nibble codes uint8 [..., nb, 32]; element 2j = low nibble of byte j."""
    codes = np.empty(blocks.shape[:-1] + (BLOCK,), dtype=np.uint8)
    codes[..., 0::2] = blocks & 0x0F
    codes[..., 1::2] = blocks >> 4
    return codes


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Inverse of unpack_nibbles: codes uint8 [..., nb, 32] (values 0..15) -> uint8 [..., nb, 16]."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def decode(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """MXFP4 -> float32 [..., nb * 32], exact for s <= 252 (s = 0 gives exact float32
    subnormals). s = 253/254 push |values| >= 2^128 to inf (float32 range; s = 255 is NaN in
    the spec); real weights use s around 120."""
    _check_pair(blocks, scales)
    values = E2M1_VALUES[unpack_nibbles(blocks)]                      # [..., nb, 32]
    exponents = scales.astype(np.int32)[..., None] - SCALE_BIAS
    np.ldexp(values, exponents, out=values)                          # in place: one output buffer
    return values.reshape(blocks.shape[:-2] + (blocks.shape[-2] * BLOCK,))


def _round_to_e2m1_codes(magnitude: np.ndarray) -> np.ndarray:
    """|y| -> magnitude code 0..7, round to nearest, ties to the even code (mantissa bit 0);
    saturates at 6 (code 7) as the OCP MX spec does for FP4."""
    grid = E2M1_MAGNITUDES.astype(np.float64)
    lower = np.clip(np.searchsorted(grid, magnitude, side="right") - 1, 0, 6)
    d_lo = magnitude - grid[lower]
    d_hi = grid[lower + 1] - magnitude
    upper_is_even = (lower + 1) % 2 == 0
    take_upper = (d_hi < d_lo) | ((d_hi == d_lo) & upper_is_even)
    return np.where(magnitude >= 6.0, 7, lower + take_upper).astype(np.uint8)


def encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [..., K] (K % 32 == 0) -> (blocks uint8 [..., K/32, 16], scales uint8 [..., K/32]).

    OCP MX v1.0 §6.3: per block, shared exponent X = floor(log2(max|x|)) - emax(E2M1=2), clamped
    to the E8M0 range [-127, 127]; each x / 2^X is rounded to nearest-even on the E2M1 grid,
    magnitudes above 6 saturate to 6. An all-zero block gets s = 0. Values already on an
    MXFP4 grid come back exactly: decode(*encode(decode(b, s))) == decode(b, s).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] % BLOCK:
        raise ValueError(f"last dimension {x.shape[-1]} is not a multiple of the MXFP4 block {BLOCK}")
    if not np.isfinite(x).all():
        raise ValueError("MXFP4 encode: input has NaN or infinity")
    xb = x.reshape(x.shape[:-1] + (x.shape[-1] // BLOCK, BLOCK))
    amax = np.abs(xb).max(axis=-1)
    _, e = np.frexp(amax)                                     # amax = m * 2^e, m in [0.5, 1)
    shared = np.clip(e - 1 - E2M1_EMAX, -SCALE_BIAS, SCALE_BIAS)
    shared = np.where(amax > 0, shared, -SCALE_BIAS)
    y = np.ldexp(xb, -shared[..., None])                      # exact in float64
    codes = _round_to_e2m1_codes(np.abs(y))
    codes |= np.where((y < 0) & (codes > 0), 8, 0).astype(np.uint8)
    return pack_nibbles(codes), (shared + SCALE_BIAS).astype(np.uint8)


def to_int8_blocks(blocks: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lossless MXFP4 -> int8 block-32: (q int8 [..., nb*32], scale float32 [..., nb]) with
    q[..., 32*b + i] * scale[..., b] == decode(blocks, scales)[..., 32*b + i] exactly."""
    _check_pair(blocks, scales)
    twice = (2 * E2M1_VALUES).astype(np.int8)                 # 2*E2M1 is an integer, |q| <= 12
    q = twice[unpack_nibbles(blocks)]
    scale = np.ldexp(np.float32(1), scales.astype(np.int32) - (SCALE_BIAS + 1)).astype(np.float32)
    return q.reshape(blocks.shape[:-2] + (-1,)), scale


def quantize_int4(x: np.ndarray, block: int = BLOCK, scale_dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 per block along the last axis: (q int8 [..., K] in [-7, 7],
    scale [..., K/block] of scale_dtype) with x ~= q * scale, scale = max|x| / 7 (1 for a zero
    block) rounded to scale_dtype first, so that q * scale is the nearest value the stored block
    can hold (q chosen with the unrounded scale would miss it by up to 7x the scale's rounding)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % block:
        raise ValueError(f"last dimension {x.shape[-1]} is not a multiple of the int4 block {block}")
    xb = x.reshape(x.shape[:-1] + (x.shape[-1] // block, block))
    amax = np.abs(xb).max(axis=-1)
    scale = np.where(amax > 0, amax / np.float32(7), 1.0).astype(np.float32)
    limit = np.finfo(scale_dtype).max
    if (scale > limit).any():
        raise ValueError(f"int4 block scale max|x|/7 up to {scale.max():.4g} overflows "
                         f"{np.dtype(scale_dtype).name} (largest {float(limit):.4g})")
    stored = scale.astype(scale_dtype)
    divisor = stored.astype(np.float32)
    q = np.clip(np.rint(xb / np.where(divisor > 0, divisor, 1)[..., None]), -7, 7).astype(np.int8)
    return q.reshape(x.shape), stored


def to_int4_blocks(blocks: np.ndarray, scales: np.ndarray, block: int = BLOCK
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Lossy MXFP4 -> symmetric int4 (see quantize_int4) of the decoded values."""
    return quantize_int4(decode(blocks, scales), block)


def dequantize_blocks(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q [..., K] * scale [..., K/block] broadcast per block -> float32 [..., K]."""
    block = q.shape[-1] // scale.shape[-1]
    qb = q.reshape(q.shape[:-1] + (scale.shape[-1], block)).astype(np.float32)
    return (qb * scale[..., None]).reshape(q.shape)
