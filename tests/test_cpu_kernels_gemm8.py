"""Gemm8bit (8-bit dense blocks, llama.cpp's q8_0 layout) on our CPU kernels through ONNX Runtime,
against the numpy reference kernel and the stated int8 scheme, on every code path this CPU has;
and the q8 quantizer (compiler/dense4bit.quantize_q8) against its specification."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from gptoss_edge.compiler import dense4bit, reference_kernels as rk
from gptoss_edge.compiler import opset

from test_cpu_kernels import ISAS, U, int8_activations, session

K, N = 288, 37      # 9 blocks of 32 (AVX-512: 4 pairs + a tail block); 37 rows: no row chunk multiple


def case(seed=0, k=K):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, k)).astype(np.float32)
    q, d = dense4bit.quantize_q8(w)
    return w, q, d, rng.standard_normal(N).astype(np.float32)


def gemm8_session(q, d, bias, x_dim=None, **kw):
    k = q.shape[1] * 32
    node = helper.make_node(opset.GEMM_8BIT.op_type, ["x", "weight", "weight_scales", "bias"], ["y"],
                            domain=opset.DOMAIN, in_features=k, out_features=N)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", x_dim or k])
    return session([node], [x], {"weight": q, "weight_scales": d, "bias": bias}, **kw)


def decoded(q, d) -> np.ndarray:
    return (q.astype(np.float64) * d.astype(np.float64)[..., None]).reshape(N, -1)


# ---- the quantizer ------------------------------------------------------------------------------

def test_q8_quantizer_follows_its_specification():
    w, q, d, _ = case()
    assert q.dtype == np.int8 and q.shape == (N, K // 32, 32) and d.dtype == np.float16 and d.shape == (N, K // 32)
    blocks = w.reshape(N, -1, 32).astype(np.float64)
    amax = np.abs(blocks).max(-1)
    # d is max|w| / 127 (computed in float32) rounded to the nearest float16
    np.testing.assert_array_equal(d, (amax.astype(np.float32) / np.float32(127)).astype(np.float16))
    assert q.min() >= -127 and q.max() <= 127
    # q is the nearest level: within half a step, except where the clip at +-127 bites (the
    # float16 d rounded below max/127): there within 127 d 2^-11 of the block max
    err = np.abs(blocks - q * d.astype(np.float64)[..., None])
    half = d.astype(np.float64)[..., None] / 2
    clipped = np.abs(q) == 127
    assert np.all(err[~clipped] <= half.repeat(32, -1)[~clipped] * (1 + 1e-6))
    assert np.all(err[clipped] <= (half + 127 * d.astype(np.float64)[..., None] * 2.0 ** -11).repeat(32, -1)[clipped])


def test_q8_quantizer_keeps_values_on_its_grid_and_zero_blocks():
    rng = np.random.default_rng(5)
    q0 = rng.integers(-127, 128, (3, 64)).astype(np.int8)
    q0[:, 0] = 127                              # each block's max is a full step count
    q0[:, 32] = -127
    d0 = np.float16(0.0123)
    w = (q0.astype(np.float32) * np.float32(d0))
    w[2, 32:] = 0.0                             # an all-zero block
    q, d = dense4bit.quantize_q8(w)
    np.testing.assert_array_equal(q.reshape(3, 64)[:2], q0[:2])
    np.testing.assert_array_equal(q.reshape(3, 64)[2, :32], q0[2, :32])
    assert d[2, 1] == 0 and not q.reshape(3, 64)[2, 32:].any()
    assert np.all(d[d != 0] == d0)


# ---- the kernel -----------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tokens", [1, 5, 70])
def test_gemm8bit_fp32_activations_exact_up_to_fp32_summation(isa, tokens):
    _, q, d, bias = case()
    x = np.random.default_rng(1).standard_normal((1, tokens, K)).astype(np.float32)
    y = gemm8_session(q, d, bias, isa=isa).run(None, {"x": x})[0]
    ref = rk.gemm_8bit(x.astype(np.float64), q, d, bias, in_features=K, out_features=N)
    # w = q d is exact in float32 (7-bit integer times an 11-bit significand); the K products and
    # their sums are float32: |err| <= (K + 2) u sum|x w| + |bias| u.
    bound = (K + 2) * U * (np.abs(x) @ np.abs(decoded(q, d)).T) + np.abs(bias) * U
    assert np.all(np.abs(y - ref) <= bound)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tokens", [1, 6, 11])   # token tiles of 4: 1; 4 + 2; 4 + 4 + 3
@pytest.mark.parametrize("k", [K, 256])      # odd block count (a tail block) and even
def test_gemm8bit_int8_activations_match_the_stated_quantization(isa, tokens, k):
    _, q, d, bias = case(seed=2, k=k)
    x = int8_activations(tokens, k, seed=3)
    y = gemm8_session(q, d, bias, activations="int8", isa=isa).run(None, {"x": x[None]})[0][0]
    # kernels.h: per token and block of 32, dx = amax/127 (float32), qx = round-half-even(x / dx);
    # int32 block dots with q (exact: |sum| <= 32 x 127^2); float: dot x (d dx), summed.
    xb = x.reshape(tokens, -1, 32)
    dx = (np.abs(xb).max(-1) / np.float32(127)).astype(np.float32)
    qx = np.rint(xb / np.where(dx > 0, dx, 1)[..., None]).astype(np.float64)
    dots = np.einsum("tbi,nbi->tnb", qx, q.astype(np.float64))
    ref = np.einsum("tnb,nb,tb->tn", dots, d.astype(np.float64), dx.astype(np.float64)) + bias
    # float part: the scale product, its product with the dot, nb fused adds, the bias: each
    # rounding at most u of the magnitude below.
    mag = np.einsum("tbi,nbi->tnb", np.abs(qx), np.abs(q.astype(np.float64)))
    scale = np.einsum("tnb,nb,tb->tn", mag, d.astype(np.float64), dx.astype(np.float64))
    assert np.all(np.abs(y - ref) <= (k // 32 + 8) * U * scale + np.abs(bias) * U)
    exact = rk.gemm_8bit(x.astype(np.float64), q, d, bias, in_features=k, out_features=N)
    assert np.abs(y - exact).max() > 0      # the mode really quantizes


def test_gemm8bit_threads_split_rows_not_sums():
    _, q, d, bias = case()
    x = np.random.default_rng(4).standard_normal((1, 9, K)).astype(np.float32)
    runs = [gemm8_session(q, d, bias, threads=t).run(None, {"x": x})[0] for t in (1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_gemm8bit_rejects_bad_inputs_in_one_line():
    _, q, d, bias = case()
    sess = gemm8_session(q, d, bias, x_dim="k")
    with pytest.raises(Exception, match=r"Gemm8bit: input 'input' has shape \(1, 2, 100\), last dim expected 288"):
        sess.run(None, {"x": np.zeros((1, 2, 100), np.float32)})
    with pytest.raises(Exception, match="Gemm8bit"):                          # bytes, not int8
        gemm8_session(q.view(np.uint8), d, bias).run(None, {"x": np.zeros((1, 1, K), np.float32)})
    with pytest.raises(rk.KernelError, match="'weight' must be int8"):
        rk.gemm_8bit(np.zeros((1, K)), q.view(np.uint8), d, in_features=K, out_features=N)

