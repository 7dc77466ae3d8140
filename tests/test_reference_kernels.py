"""Each numpy reference kernel alone against a plain formula (Python loops, float64) on edge
shapes: one token, odd lengths, window boundaries, ring wrap-around, prefill longer than the
window, GQA ratios, ragged batches with padding rows, both 4-bit formats, top-k ties."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from gptoss_edge.compiler import mxfp4, opset
from gptoss_edge.compiler import reference_kernels as rk

# Kernels compute in float64 and return float32; the plain formulas are float64. The only gap is
# the final float32 rounding (rel 6e-8) and float64 summation order: 1e-5 relative is ample and
# still 1000x below any indexing/masking bug (those change values at O(1)).
RTOL, ATOL = 1e-5, 1e-6


# ---- plain formulas -------------------------------------------------------------------------

def e2m1(nibble: int) -> float:
    """E2M1 from its bit fields: sign bit 3, exponent bits 2-1, mantissa bit 0."""
    sign = -1.0 if nibble & 8 else 1.0
    exp, man = (nibble >> 1) & 3, nibble & 1
    return sign * (man * 0.5 if exp == 0 else 2.0 ** (exp - 1) * (1 + man / 2))


def decode_rows(blocks: np.ndarray, scales: np.ndarray, fmt: str) -> np.ndarray:
    """[N, K/32, 16] bytes -> [N, K] by loops over every element."""
    b = blocks.view(np.uint8)
    n_rows, n_blocks = b.shape[:2]
    w = np.zeros((n_rows, n_blocks * 32))
    for n in range(n_rows):
        for blk in range(n_blocks):
            scale = (2.0 ** (int(scales.view(np.uint8)[n, blk]) - 127) if fmt == "mxfp4"
                     else float(scales[n, blk]))
            for j in range(16):
                byte = int(b[n, blk, j])
                for half, nib in ((0, byte & 15), (1, byte >> 4)):
                    q = e2m1(nib) if fmt == "mxfp4" else nib - 8
                    w[n, 32 * blk + 2 * j + half] = q * scale
    return w


def random_mxfp4(rng, shape_rows: tuple[int, ...], k: int):
    blocks = rng.integers(0, 256, (*shape_rows, k // 32, 16), dtype=np.uint8)
    scales = rng.integers(121, 128, (*shape_rows, k // 32), dtype=np.uint8)
    return blocks, scales


# ---- decoding and Gemm4bit -------------------------------------------------------------------

def test_e2m1_table_matches_bit_fields():
    assert [e2m1(i) for i in range(16)] == list(mxfp4.E2M1_VALUES)


@pytest.mark.parametrize("fmt", ["mxfp4", "int4"])
@pytest.mark.parametrize("shape", [(1, 64), (3, 5, 96)])
def test_gemm_4bit_against_loops(fmt, shape):
    rng = np.random.default_rng(1)
    n_out, k = 7, shape[-1]
    blocks = rng.integers(0, 256, (n_out, k // 32, 16), dtype=np.uint8)
    scales = (random_mxfp4(rng, (n_out,), k)[1] if fmt == "mxfp4"
              else rng.uniform(0.01, 0.1, (n_out, k // 32)).astype(np.float16))
    bias = rng.normal(size=n_out).astype(np.float32)
    x = rng.normal(size=shape).astype(np.float32)
    w = decode_rows(blocks, scales, fmt)
    expected = np.einsum("...k,nk->...n", x.astype(np.float64), w) + bias
    got = rk.gemm_4bit(x, blocks, scales, bias, format=fmt, in_features=k, out_features=n_out)
    assert got.dtype == np.float32 and got.shape == (*shape[:-1], n_out)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    # int8 carries the same bits (TensorRT graphs); no bias is allowed (optional port).
    int8_scales = scales.view(np.int8) if fmt == "mxfp4" else scales
    got8 = rk.gemm_4bit(x, blocks.view(np.int8), int8_scales, None, format=fmt, in_features=k,
                        out_features=n_out)
    np.testing.assert_allclose(got8, expected - bias, rtol=RTOL, atol=ATOL)


def test_gemm_4bit_rejects_bad_inputs():
    x = np.zeros((2, 64), np.float32)
    blocks = np.zeros((4, 2, 16), np.uint8)
    with pytest.raises(rk.KernelError, match="weight_scales"):
        rk.gemm_4bit(x, blocks, np.zeros((4, 3), np.uint8), format="mxfp4", in_features=64, out_features=4)
    with pytest.raises(rk.KernelError, match="float16"):
        rk.gemm_4bit(x, blocks, np.zeros((4, 2), np.uint8), format="int4", in_features=64, out_features=4)
    with pytest.raises(rk.KernelError, match="format"):
        rk.gemm_4bit(x, blocks, np.zeros((4, 2), np.uint8), format="nf4", in_features=64, out_features=4)


# ---- MoeMxfp4 -------------------------------------------------------------------------------

def exact_logits(x, rw, rb) -> np.ndarray:
    """[T, E] float64: math.fsum of the products (each exact in float64) and the bias."""
    return np.array([[math.fsum([*(float(a) * float(w) for a, w in zip(row, rw[e])), float(rb[e])])
                      for e in range(len(rw))] for row in x])


def rounds_alike(x, rw, rb) -> bool:
    """Whether every value within the kernel's float64 summation bound of the exact logit
    (H*2^-53*sum|x*w| + 2^-53*|logit|, Higham's gamma_H plus the bias add) rounds to the same
    float32. If so, any float64 summation order (any BLAS) yields the same float32 logits."""
    exact = exact_logits(x, rw, rb)
    bound = (x.shape[1] * 2.0 ** -53 * (np.abs(x.astype(np.float64)) @ np.abs(rw.astype(np.float64)).T)
             + 2.0 ** -53 * np.abs(exact))
    return bool(np.array_equal((exact - bound).astype(np.float32), (exact + bound).astype(np.float32)))


def moe_formula(x, rw, rb, gub, gus, gubias, db, ds, dbias, top_k, limit=7.0, alpha=1.702):
    out = np.zeros((x.shape[0], db.shape[1]))
    all_logits = exact_logits(x, rw, rb).astype(np.float32)    # exact, rounded once: the spec
    for t in range(x.shape[0]):
        logits = [float(v) for v in all_logits[t]]
        chosen = sorted(range(len(logits)), key=lambda e: (-logits[e], e))[:top_k]
        z = [math.exp(logits[e] - logits[chosen[0]]) for e in chosen]
        for e, zi in zip(chosen, z):
            gu = decode_rows(gub[e], gus[e], "mxfp4") @ x[t].astype(np.float64) + gubias[e]
            g, lin = np.minimum(gu[0::2], limit), np.clip(gu[1::2], -limit, limit)
            a = g / (1 + np.exp(-alpha * g)) * (lin + 1)
            out[t] += zi / sum(z) * (decode_rows(db[e], ds[e], "mxfp4") @ a + dbias[e])
    return out


def moe_inputs(rng, tokens=5, hidden=64, inter=32, experts=6):
    x = rng.normal(size=(tokens, hidden)).astype(np.float32)
    rw = rng.normal(size=(experts, hidden)).astype(np.float32)
    rb = rng.normal(size=experts).astype(np.float32)
    gub, gus = random_mxfp4(rng, (experts, 2 * inter), hidden)
    db, ds = random_mxfp4(rng, (experts, hidden), inter)
    gubias = rng.normal(size=(experts, 2 * inter)).astype(np.float32)
    dbias = rng.normal(size=(experts, hidden)).astype(np.float32)
    return [x, rw, rb, gub, gus, gubias, db, ds, dbias]


def moe_attrs(inputs, top_k):
    x, rw, _, _, _, _, _, ds, _ = inputs
    return dict(num_experts=rw.shape[0], top_k=top_k, hidden_size=x.shape[1],
                intermediate_size=ds.shape[2] * 32, swiglu_limit=7.0, swiglu_alpha=1.702,
                swiglu_linear_offset=1.0)


@pytest.mark.parametrize("tokens,top_k", [(1, 1), (5, 4), (7, 6)])
def test_moe_against_loops(tokens, top_k):
    inputs = moe_inputs(np.random.default_rng(tokens), tokens=tokens)
    # Why not float32 logits: a float32 dot product of H = 64 terms is only within
    # gamma_64 * sum|x*w| ~ 64 * 2^-24 * 48 = 1.8e-4 of exact (measured: sgemm vs sgemv differ by
    # up to 3.8e-6 on OpenBLAS Haswell), and the top-k softmax turns a logit error d into an
    # output error sum_j w_j d_j (y_j - out) with expert outputs |y| up to ~600 here: ~1e-4 to
    # 1e-3, which broke atol 1e-4 on AVX2 machines. Exact logits rounded once agree on every CPU
    # (rounds_alike proves it for this data), so routing is identical and the rest is float64
    # on both sides: summation-order differences <= (H+I)*2^-53*sum|terms| ~ 1.5e-11 here (|terms|
    # sum to <= 1.4e3), plus the kernel's final float32 cast (2^-24 relative, measured max 5.8e-8):
    # RTOL/ATOL hold with margins of 6e4 (absolute part) and 170 (relative part).
    assert rounds_alike(*inputs[:3])
    got = rk.moe_mxfp4(*inputs, **moe_attrs(inputs, top_k))
    np.testing.assert_allclose(got, moe_formula(*inputs, top_k), rtol=RTOL, atol=ATOL)


def test_moe_top_k_ties_pick_lower_index():
    inputs = moe_inputs(np.random.default_rng(3), tokens=2)
    inputs[1] = np.zeros_like(inputs[1])                                  # logits = bias only
    inputs[2] = np.array([0.5, 2.0, 2.0, 1.0, 2.0, -1.0], np.float32)    # three-way tie at 2.0
    experts, weights = rk.route(inputs[0], inputs[1], inputs[2], top_k=2)
    assert experts.tolist() == [[1, 2], [1, 2]]
    np.testing.assert_allclose(weights, 0.5)
    got = rk.moe_mxfp4(*inputs, **moe_attrs(inputs, 2))
    np.testing.assert_allclose(got, moe_formula(*inputs, 2), rtol=RTOL, atol=ATOL)  # as above


def test_moe_rejects_wrong_shape():
    inputs = moe_inputs(np.random.default_rng(4))
    inputs[4] = inputs[4][:, :, :1]
    with pytest.raises(rk.KernelError, match="gate_up_scales"):
        rk.moe_mxfp4(*inputs, **moe_attrs(moe_inputs(np.random.default_rng(4)), 2))


# ---- SinkAttention --------------------------------------------------------------------------

def rope_tables(positions: int, d: int):
    inv = 1.0 / (10000 ** (np.arange(d // 2) / (d // 2)))
    ang = np.arange(positions)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def rotate(x, cos, sin):
    h = len(x) // 2
    return np.concatenate([x[:h] * cos - x[h:] * sin, x[h:] * cos + x[:h] * sin])


class AttentionFormula:
    """Unbounded history per row; every score from scratch with loops over heads and queries."""

    def __init__(self, batch, heads, kv_heads, d, window, sinks, cos, sin):
        self.h, self.hkv, self.d, self.window = heads, kv_heads, d, window
        self.sinks, self.cos, self.sin = sinks.astype(np.float64), cos, sin
        self.keys = [[] for _ in range(batch)]     # per row: list of [Hkv, D] (rope'd)
        self.values = [[] for _ in range(batch)]

    def step(self, b, q, k, v):
        """q [n, H*D], k/v [n, Hkv*D] (float64) -> output [n, H*D]."""
        d, out = self.d, np.zeros_like(q)
        for i in range(len(q)):
            p = len(self.keys[b])
            c, s = self.cos[p].astype(np.float64), self.sin[p].astype(np.float64)
            self.keys[b].append(np.stack([rotate(k[i, j * d:(j + 1) * d], c, s) for j in range(self.hkv)]))
            self.values[b].append(v[i].reshape(self.hkv, d))
            for h in range(self.h):
                kv = h // (self.h // self.hkv)
                qh = rotate(q[i, h * d:(h + 1) * d], c, s)
                lo = max(0, p - self.window + 1) if self.window else 0
                scores = [float(qh @ self.keys[b][kp][kv]) / math.sqrt(d) for kp in range(lo, p + 1)]
                top = max(scores + [self.sinks[h]])
                e = [math.exp(x - top) for x in scores]
                den = sum(e) + math.exp(self.sinks[h] - top)
                out[i, h * d:(h + 1) * d] = sum(ei / den * self.values[b][kp][kv]
                                                for ei, kp in zip(e, range(lo, p + 1)))
        return out


def run_attention_steps(steps, batch, heads, kv_heads, d, window, max_ctx=700, seed=0):
    """steps: list of per-row new_len lists. Runs the kernel step by step on its own cache and
    compares outputs and the cache contents with the formula."""
    rng = np.random.default_rng(seed)
    cos, sin = rope_tables(max_ctx, d)
    sinks = rng.normal(size=heads).astype(np.float32)
    cap = window if window else max_ctx
    pk = rng.normal(size=(batch, kv_heads, cap, d)).astype(np.float32)   # garbage: must be unused
    pv = rng.normal(size=(batch, kv_heads, cap, d)).astype(np.float32)
    formula = AttentionFormula(batch, heads, kv_heads, d, window, sinks, cos, sin)
    past = np.zeros(batch, np.int32)
    attrs = dict(num_heads=heads, num_kv_heads=kv_heads, head_dim=d, window=window, scale=d ** -0.5)
    for new in steps:
        new = np.array(new, np.int32)
        S = max(int(new.max()), 1)
        q = rng.normal(size=(batch, S, heads * d)).astype(np.float32)
        k = rng.normal(size=(batch, S, kv_heads * d)).astype(np.float32)
        v = rng.normal(size=(batch, S, kv_heads * d)).astype(np.float32)
        out, nk, nv = rk.sink_attention(q, k, v, sinks, cos, sin, pk, pv, past, new, **attrs)
        for b in range(batch):
            n = int(new[b])
            expected = formula.step(b, q[b, :n].astype(np.float64), k[b, :n].astype(np.float64),
                                    v[b, :n].astype(np.float64))
            np.testing.assert_allclose(out[b, :n], expected, rtol=RTOL, atol=ATOL)
            assert not out[b, n:].any(), "padded query rows must be zeros"
            if n == 0:
                assert np.array_equal(nk[b], pk[b]) and np.array_equal(nv[b], pv[b])
            end = past[b] + n
            for p in range(max(0, end - (window or end)), end):        # every live position
                slot = p % window if window else p
                np.testing.assert_allclose(nk[b, :, slot], formula.keys[b][p], rtol=RTOL, atol=ATOL)
                np.testing.assert_allclose(nv[b, :, slot], formula.values[b][p], rtol=RTOL, atol=ATOL)
        pk, pv, past = nk, nv, past + new


@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2), (8, 1)])
def test_attention_single_token_steps_across_window_boundary(heads, kv_heads):
    # prefill 126, then decode positions 126..131: crosses 127/128/129 and wraps the ring.
    run_attention_steps([[126]] + [[1]] * 6, 1, heads, kv_heads, 8, window=128)


def test_attention_prefill_longer_than_window_then_ring_wraps_repeatedly():
    # 301 tokens in one step (ring keeps only the last 128), then odd chunks wrapping twice more.
    run_attention_steps([[301], [1], [77], [129], [1]], 1, 4, 2, 8, window=128, seed=1)


def test_attention_ragged_batch_with_padding_rows():
    steps = [[1, 130, 0], [127, 1, 5], [0, 0, 3], [1, 128, 129], [2, 1, 0]]
    run_attention_steps(steps, 3, 4, 2, 8, window=128, seed=2)


@pytest.mark.parametrize("window", [0, 5])
def test_attention_full_and_small_window(window):
    run_attention_steps([[9, 1], [1, 11], [4, 0], [1, 1]], 2, 4, 1, 16, window=window, max_ctx=64, seed=3)


def test_attention_rejects_contract_violations():
    cos, sin = rope_tables(16, 8)
    q, k = np.zeros((1, 4, 16), np.float32), np.zeros((1, 4, 8), np.float32)
    attrs = dict(num_heads=2, num_kv_heads=1, head_dim=8, scale=0.35)
    sinks = np.zeros(2, np.float32)
    cache = np.zeros((1, 1, 12, 8), np.float32)
    with pytest.raises(rk.KernelError, match="cache slots"):
        rk.sink_attention(q, k, k, sinks, cos, sin, cache, cache, np.array([10], np.int32),
                          np.array([4], np.int32), window=0, **attrs)
    with pytest.raises(rk.KernelError, match="ring"):
        rk.sink_attention(q, k, k, sinks, cos, sin, cache, cache, np.array([0], np.int32),
                          np.array([4], np.int32), window=8, **attrs)
    with pytest.raises(rk.KernelError, match="RoPE tables"):
        rk.sink_attention(q, k, k, sinks, cos[:3], sin[:3], cache, cache, np.array([0], np.int32),
                          np.array([4], np.int32), window=0, **attrs)


# ---- through onnx.reference -----------------------------------------------------------------

def test_kernels_run_inside_reference_evaluator_with_plugin_attributes():
    rng = np.random.default_rng(5)
    n_out, k = 6, 64
    blocks, scales = random_mxfp4(rng, (n_out,), k)
    x = rng.normal(size=(2, 3, k)).astype(np.float32)
    node = helper.make_node(opset.GEMM_4BIT.op_type, ["x", "w", "s"], ["y"], domain=opset.DOMAIN,
                            format="mxfp4", in_features=k, out_features=n_out,
                            plugin_version=opset.GEMM_4BIT.plugin_version,
                            plugin_namespace=opset.PLUGIN_NAMESPACE)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(blocks.view(np.int8), "w"),
         onnx.numpy_helper.from_array(scales.view(np.int8), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                     helper.make_opsetid(opset.DOMAIN, opset.OPSET_VERSION)])
    (y,) = ReferenceEvaluator(model, new_ops=rk.REFERENCE_OPS).run(None, {"x": x})
    np.testing.assert_allclose(y, x.astype(np.float64) @ decode_rows(blocks, scales, "mxfp4").T,
                               rtol=RTOL, atol=ATOL)
