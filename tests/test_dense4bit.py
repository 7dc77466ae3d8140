"""The dense 4-bit quantizers (compiler/dense4bit.py, used by `--dense 4bit` and by the
dense4bit-* oracles of tests/test_parity.py) against references written from the formats' specs
with Python loops, decoded by the bit-field loops of tests/test_reference_kernels.py, so neither
the project's encoders nor its decoders check themselves:

  mxfp4: OCP MX brute force (tests/test_mxfp4.py): shared exponent floor(log2 max|w|) - 2, the
         nearest E2M1 value, ties to the even code, saturation at 6.
  int4:  the op set's int4 (offset-binary nibble q + 8, float16 scale per block of 32): the
         stored scale is float16(max|w| / 7) and every element decodes to the value nearest to
         it among the 16 the block can hold with that scale.
Plus round trips: values already on a block's grid come back exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from gptoss_edge.compiler import dense4bit
from gptoss_edge.compiler.graph.ir import from_array
from test_mxfp4 import nearest_even_reference
from test_reference_kernels import decode_rows


def weights(seed: int, rows: int = 12, k: int = 96) -> np.ndarray:
    """Rows spanning 2^-14 .. 2^7 in magnitude, a zero block, exact ties and saturating values."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, k)) * np.exp2(rng.integers(-14, 8, (rows, 1)))
    w[0, :32] = 0.0
    w[1, :32] = np.linspace(-6, 6, 32)              # block max 6: scale 1, many exact ties
    w[1, 32:36] = [0.25, 0.75, 2.5, 5.0]            # E2M1 midpoints next to a block max of ~6
    w[2, :32] = 7.9 * np.sign(w[2, :32])            # saturation (7.9 -> 6 x 2^0)
    return w.astype(np.float32)


def int4_nearest_reference(w_block: np.ndarray, scale: float) -> np.ndarray:
    """For each element, the nearest of the 16 values (c - 8) * scale, c = 0..15."""
    grid = [(c - 8) * scale for c in range(16)]
    return np.array([min(grid, key=lambda g: abs(g - float(v))) for v in w_block])


@pytest.mark.parametrize("seed", [0, 1])
def test_mxfp4_is_the_ocp_nearest_value(seed):
    w = weights(seed)
    blocks, scales = dense4bit.quantize_mxfp4(w)
    got = decode_rows(blocks, scales, "mxfp4")
    want = np.stack([nearest_even_reference(block) for block in w.reshape(-1, 32)]).reshape(w.shape)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", [0, 1])
def test_int4_is_the_nearest_value_of_the_stored_format(seed):
    w = weights(seed)
    blocks, scales = dense4bit.quantize_int4(w)
    assert blocks.dtype == np.uint8 and scales.dtype == np.float16
    got = decode_rows(blocks, scales, "int4")
    for n in range(w.shape[0]):
        for b in range(w.shape[1] // 32):
            block = w[n, 32 * b: 32 * (b + 1)].astype(np.float64)
            amax = np.abs(block).max()
            assert scales[n, b] == np.float16(np.float32(amax) / np.float32(7)) or amax == 0
            scale = float(scales[n, b])
            want = int4_nearest_reference(block, scale)
            # Equal distance, not equal value: an exact midpoint may go either way.
            assert np.array_equal(np.abs(got[n, 32 * b: 32 * (b + 1)] - block), np.abs(want - block)), (n, b)


def test_values_on_the_grid_come_back_exactly():
    rng = np.random.default_rng(5)
    # int4: codes in [-7, 7] with a +-7 in every block, float16 scales: scale = max|w| / 7 again.
    q = rng.integers(-7, 8, (8, 64))
    q[:, [0, 32]] = rng.choice([-7, 7], (8, 2))
    s16 = rng.uniform(1e-3, 10, (8, 2)).astype(np.float16).astype(np.float64)
    w = (q * np.repeat(s16, 32, axis=1)).astype(np.float32)
    assert np.array_equal(decode_rows(*dense4bit.quantize_int4(w), "int4"), w)
    # mxfp4: E2M1 codes with a +-6 (code 7) in every block.
    codes = rng.integers(0, 16, (8, 64))
    codes[:, [5, 40]] = rng.choice([7, 15], (8, 2))
    exps = rng.integers(-20, 10, (8, 2))
    table = np.array([0, .5, 1, 1.5, 2, 3, 4, 6])
    values = np.where(codes >= 8, -1.0, 1.0) * table[codes % 8] * np.exp2(np.repeat(exps, 32, axis=1))
    w = values.astype(np.float32)
    assert np.array_equal(decode_rows(*dense4bit.quantize_mxfp4(w), "mxfp4"), w)


@pytest.mark.parametrize("fmt", dense4bit.FORMATS)
def test_lazy_row_groups_equal_the_whole_matrix(fmt):
    """What the compiler writes (quantize_lazy, a few rows per group) is what the oracle uses."""
    w = weights(2, rows=40, k=64)
    init = from_array("w_t", np.ascontiguousarray(w.T))
    blocks, scales = dense4bit.quantize_lazy("/x", init, fmt, group_bytes=3 * 64 * 4)   # 3 rows
    want_blocks, want_scales = dense4bit.QUANTIZERS[fmt](w)
    assert np.array_equal(blocks.array(), want_blocks) and np.array_equal(scales.array(), want_scales)


def test_int4_scale_outside_float16_is_refused():
    w = np.full((1, 32), 1e6, np.float32)            # max |w| / 7 > 65504
    with pytest.raises(ValueError, match="float16"):
        dense4bit.quantize_int4(w)
