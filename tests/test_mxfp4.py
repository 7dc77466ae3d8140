"""MXFP4 codecs: bit-exact decode, spec-conformant encode, lossless int8 and bounded int4 repacks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gptoss_edge.compiler import mxfp4

# E8M0 scales whose every MXFP4 value fits float32 (6 * 2^(252-127) = 1.5 * 2^127 < FLT_MAX);
# s = 253/254 overflow float32 for large elements, s = 255 is NaN in the spec.
MAX_FINITE_SCALE = 252
SCALES = [0, 1, 100, 120, 127, 128, 200, MAX_FINITE_SCALE]


def e2m1_formula(nibble: int) -> float:
    """E2M1 from its bits, independent of the codec's table: S EE M; exponent bias 1,
    EE = 0 is subnormal (0.M * 2^0), else 1.M * 2^(EE-1)."""
    sign = -1.0 if nibble & 0b1000 else 1.0
    exp, man = (nibble >> 1) & 0b11, nibble & 1
    magnitude = man * 0.5 if exp == 0 else (1 + man / 2) * 2.0 ** (exp - 1)
    return sign * magnitude


def all_bytes_blocks() -> np.ndarray:
    """All 256 byte values as 16 blocks of 16 bytes."""
    return np.arange(256, dtype=np.uint8).reshape(16, 16)


@pytest.mark.parametrize("s", SCALES)
def test_decode_matches_bit_formula_for_every_byte(s):
    blocks = all_bytes_blocks()
    out = mxfp4.decode(blocks, np.full(16, s, np.uint8))
    assert out.dtype == np.float32 and out.shape == (16 * 32,)
    for byte in range(256):
        b, j = divmod(byte, 16)
        lo, hi = out[b * 32 + 2 * j], out[b * 32 + 2 * j + 1]     # element 2j = low nibble
        assert lo == math.ldexp(e2m1_formula(byte & 0xF), s - 127)
        assert hi == math.ldexp(e2m1_formula(byte >> 4), s - 127)


def test_decode_overflows_float32_only_beyond_scale_252():
    blocks = np.full((1, 16), 0x77, np.uint8)                  # every element +6
    with np.errstate(over="ignore"):
        assert np.isinf(mxfp4.decode(blocks, np.array([253], np.uint8))).all()
    assert np.isfinite(mxfp4.decode(blocks, np.array([252], np.uint8))).all()


def test_decode_keeps_leading_dims_and_is_chunkable():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (3, 5, 4, 16), dtype=np.uint8)
    scales = rng.integers(110, 140, (3, 5, 4), dtype=np.uint8)
    full = mxfp4.decode(blocks, scales)
    assert full.shape == (3, 5, 128)
    for e in range(3):   # per-expert processing gives the same bytes
        assert np.array_equal(mxfp4.decode(blocks[e], scales[e]), full[e])


def test_decode_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="blocks"):
        mxfp4.decode(np.zeros((2, 16), np.uint8), np.zeros(3, np.uint8))


def nearest_even_reference(x: np.ndarray) -> np.ndarray:
    """Brute-force MXFP4 quantization of one block (OCP MX: X = floor(log2 amax) - 2, nearest
    grid value of x / 2^X, ties to the even code, saturate at 6) -- written without the codec."""
    amax = float(np.abs(x).max())
    if amax == 0:
        return np.zeros_like(x)
    shared = max(math.floor(math.log2(amax)) - 2, -127)
    out = []
    for v in x.astype(np.float64):
        y = min(abs(v) / 2.0 ** shared, 6.0)
        grid = [e2m1_formula(c) for c in range(8)]
        best = min(range(8), key=lambda c: (abs(grid[c] - y), c % 2))   # tie -> even code
        out.append(math.copysign(grid[best] * 2.0 ** shared, v))
    return np.array(out)


def test_encode_equals_bruteforce_round_to_nearest_even():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((40, 32)) * np.exp2(rng.integers(-12, 8, (40, 1)))).astype(np.float32)
    got = mxfp4.decode(*mxfp4.encode(x.reshape(-1)))
    want = np.concatenate([nearest_even_reference(row) for row in x])
    assert np.array_equal(got, want.astype(np.float32))


def test_encode_ties_and_saturation():
    # Block max 6 -> shared exponent 0; each value lands on the documented neighbour.
    x = np.zeros(32, np.float32)
    x[:10] = [6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.1, -0.25]
    got = mxfp4.decode(*mxfp4.encode(x))
    assert got[:10].tolist() == [6, 0, 1, 1, 2, 2, 4, 4, -6, 0]
    # max 7.9: floor(log2 7.9) - 2 = 0 -> 7.9 saturates to 6 (spec behaviour).
    y = np.zeros(32, np.float32)
    y[0] = 7.9
    blocks, scales = mxfp4.encode(y)
    assert scales[0] == 127 and mxfp4.decode(blocks, scales)[0] == 6.0


def test_encode_zero_block_and_bad_input():
    blocks, scales = mxfp4.encode(np.zeros(64, np.float32))
    assert not blocks.any() and not scales.any()
    with pytest.raises(ValueError, match="multiple"):
        mxfp4.encode(np.zeros(33, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        mxfp4.encode(np.full(32, np.nan, np.float32))


def test_encode_decode_idempotent_on_grid_values():
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, (50, 8, 16), dtype=np.uint8)
    scales = rng.integers(0, MAX_FINITE_SCALE + 1, (50, 8), dtype=np.uint8)
    values = mxfp4.decode(blocks, scales)
    b2, s2 = mxfp4.encode(values)
    assert np.array_equal(mxfp4.decode(b2, s2), values)
    # Where the block's largest magnitude code is 4 or 6, the shared exponent is the same one.
    codes = mxfp4.unpack_nibbles(blocks) & 7
    full_range = codes.max(axis=-1) >= 6
    assert full_range.any() and np.array_equal(s2[full_range], scales[full_range])


def test_int8_repack_is_lossless_for_every_scale():
    rng = np.random.default_rng(3)
    n = MAX_FINITE_SCALE + 1
    blocks = rng.integers(0, 256, (n, 4, 16), dtype=np.uint8)
    scales = np.repeat(np.arange(n, dtype=np.uint8)[:, None], 4, axis=1)   # s = 0..252
    q, scale = mxfp4.to_int8_blocks(blocks, scales)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert q.shape == (n, 128) and scale.shape == (n, 4)
    assert set(np.unique(np.abs(q.astype(int)))) <= {0, 1, 2, 3, 4, 6, 8, 12}
    # float32 products q * 2^(s-128) are exact (|q| <= 12 needs 4 mantissa bits).
    assert np.array_equal(mxfp4.dequantize_blocks(q, scale), mxfp4.decode(blocks, scales))


def test_int4_repack_error_is_bounded(capsys):
    from gptoss_edge.compiler.config import preset
    from gptoss_edge.compiler.synthetic import canonical_tensor
    cfg = preset("tiny")
    blocks = canonical_tensor(cfg, "model.layers.0.mlp.experts.gate_up_proj_blocks", 0)
    scales = canonical_tensor(cfg, "model.layers.0.mlp.experts.gate_up_proj_scales", 0)
    x = mxfp4.decode(blocks, scales)
    q, scale = mxfp4.to_int4_blocks(blocks, scales)
    assert q.dtype == np.int8 and q.min() >= -7 and q.max() <= 7
    err = mxfp4.dequantize_blocks(q, scale) - x
    per_block = np.abs(err).reshape(*scale.shape, 32) / scale[..., None]
    rel_rms = float(np.sqrt((err ** 2).mean() / (x ** 2).mean()))
    with capsys.disabled():
        print(f"\nMXFP4 -> int4 (block 32, symmetric): relative RMS error {rel_rms:.4f}, "
              f"max |error| {per_block.max():.4f} x block scale")
    # Hard bound: round-to-nearest onto steps of scale = amax/7 errs by at most half a step
    # (float32 division/rounding adds < 1e-6 relative).
    assert per_block.max() <= 0.5 * (1 + 1e-6)
    # Statistical bound: uniform rounding error has RMS step/sqrt(12) = amax/(7*sqrt(12)) =
    # 0.041*amax; Gaussian-like 32-element blocks have amax ~2.5 RMS, so ~0.10 relative.
    # 0.15 leaves room for heavier-tailed blocks (amax up to ~3.6 RMS) and catches any real bug.
    assert 0.02 < rel_rms < 0.15
