"""Host-side data for the GPU checks: activation dtypes (bf16 as uint16 bits, numpy has no
bfloat16), random MXFP4/int4 weights, tolerances."""
from __future__ import annotations

import numpy as np

SWIGLU = (7.0, 1.702, 1.0)  # gpt-oss limit/alpha/offset (= MoeMxfp4 attribute defaults; a CPU test checks)

# Unit roundoff of each activation dtype (half an ulp at 1.0).
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def device_array(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(array to upload in `dtype`, the same values as the reference sees them).
    The reference gets float16 for float16 (exact semantics) and float32 holding the rounded
    values for bfloat16."""
    if dtype == "float32":
        a = np.ascontiguousarray(x, np.float32)
        return a, a
    if dtype == "float16":
        a = np.ascontiguousarray(x, np.float16)
        return a, a
    if dtype == "bfloat16":
        bits = bf16_bits(np.asarray(x, np.float32))
        return bits, bf16_to_f32(bits)
    raise ValueError(f"unknown activation dtype {dtype!r}")


def host_dtype(dtype: str):
    return {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[dtype]


def to_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    return bf16_to_f32(a) if dtype == "bfloat16" else a.astype(np.float32)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Values of x after a store in `dtype`, as float32."""
    return to_f32(device_array(x, dtype)[0], dtype)


def mxfp4_weights(rng: np.random.Generator, shape_rows: tuple[int, ...], k: int,
                  scale_range: tuple[int, int] = (119, 124)) -> tuple[np.ndarray, np.ndarray]:
    """Random MXFP4 blocks [..., K/32, 16] (every nibble pattern) and E8M0 scales [..., K/32].
    Scales 2^-8..2^-3 keep |w| <= 0.75 so sums over K ~ 3k stay O(1..10)."""
    blocks = rng.integers(0, 256, size=(*shape_rows, k // 32, 16), dtype=np.uint8)
    scales = rng.integers(scale_range[0], scale_range[1] + 1, size=(*shape_rows, k // 32), dtype=np.uint8)
    return blocks, scales


def int4_weights(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    blocks = rng.integers(0, 256, size=(n, k // 32, 16), dtype=np.uint8)
    scales = (rng.uniform(0.002, 0.02, size=(n, k // 32))).astype(np.float16)
    return blocks, scales


def compare(got: np.ndarray, ref: np.ndarray, dtype: str, rtol_ulps: float, atol_frac: float) -> dict:
    """Elementwise |got - ref| <= atol + rtol*|ref| with rtol = rtol_ulps unit roundoffs of dtype and
    atol = atol_frac * max|ref| (accumulation-order noise relative to the output scale).
    NaN anywhere (poisoned, never written) fails."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rtol = rtol_ulps * UNIT_ROUNDOFF[dtype]
    atol = atol_frac * max(scale, 1e-30)
    err = np.abs(got - ref)
    bad = ~(err <= atol + rtol * np.abs(ref))  # NaN -> bad
    return {"ok": bool(not bad.any()), "max_abs_err": float(np.nanmax(err)) if err.size else 0.0,
            "ref_max_abs": scale, "n_bad": int(bad.sum()), "n": int(ref.size),
            "n_nan": int(np.isnan(got).sum()), "rtol": rtol, "atol": atol}
