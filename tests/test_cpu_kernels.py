"""Our CPU kernels (cpu_kernels/, the custom-op library built by pip install) through ONNX Runtime:
Gemm4bit and MoeMxfp4 one-node graphs against the numpy reference kernels, on every code path
this CPU has (forced with the session config the library reads), both activation modes, with
shapes that exercise full SIMD groups, tail blocks and the 4-token blocking."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gptoss_edge import cpu_kernels
from gptoss_edge.compiler import dense4bit, opset, reference_kernels as rk

ISAS = [i for i in cpu_kernels.ISAS if cpu_kernels.isa(i)]
U = 2.0 ** -24                       # float32 unit roundoff
LUT = {"mxfp4": np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float64),
       "int4": np.arange(16, dtype=np.float64) - 8}


def session(nodes, inputs, initializers, activations="fp32", isa="auto", threads=1):
    g = helper.make_graph(nodes, "t", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(opset.DOMAIN, 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    cpu_kernels.register(so, activations, isa)
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ---- Gemm4bit -------------------------------------------------------------------------------
K, N = 288, 37      # 9 blocks: AVX2 4 pairs + 1 tail, AVX-512 2 groups of 4 + 1 tail


def gemm_case(fmt, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32)
    blocks, scales = dense4bit.QUANTIZERS[fmt](w)
    if fmt == "mxfp4":           # every E8M0 code path: denormal 2^-128, 2^-127, normal, large
        scales[0, :4] = [0, 1, 2, 200]
    bias = rng.standard_normal(N).astype(np.float32)
    return blocks, scales, bias


def int8_activations(tokens, k, seed):
    """Random activations whose first token starts with a block of exact ties (amax 127 -> d = 1,
    values n + 0.5: the quantizer must round half to even) and an all-zero block (d = 0)."""
    x = np.random.default_rng(seed).standard_normal((tokens, k)).astype(np.float32)
    x[0, :32] = np.concatenate([[127.0], np.arange(-15, 16) + 0.5])
    x[0, 32:64] = 0.0
    return x


def gemm_session(fmt, blocks, scales, bias, x_dim=K, **kw):
    node = helper.make_node("Gemm4bit", ["x", "weight_blocks", "weight_scales", "bias"], ["y"], domain=opset.DOMAIN,
                            format=fmt, in_features=K, out_features=N)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", x_dim])
    return session([node], [x], {"weight_blocks": blocks, "weight_scales": scales, "bias": bias}, **kw)


def int_weights(fmt, blocks, scales):
    """(weight integers [N, K], block scale [N, K/32]) with w = int * scale exactly."""
    codes = np.stack([blocks & 15, blocks >> 4], -1).reshape(N, -1)
    s = np.ldexp(1.0, scales.astype(np.int64) - 128) if fmt == "mxfp4" else scales.astype(np.float64)
    return LUT[fmt][codes], s


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", ["mxfp4", "int4"])
@pytest.mark.parametrize("tokens", [1, 5])
def test_gemm4bit_fp32_activations_exact_up_to_fp32_summation(isa, fmt, tokens):
    blocks, scales, bias = gemm_case(fmt)
    x = np.random.default_rng(1).standard_normal((1, tokens, K)).astype(np.float32)
    y = gemm_session(fmt, blocks, scales, bias, isa=isa).run(None, {"x": x})[0]
    ref = rk.gemm_4bit(x.astype(np.float64), blocks, scales, bias, format=fmt, in_features=K, out_features=N)
    wabs = np.abs(rk.dequant_mxfp4(blocks, scales) if fmt == "mxfp4" else rk.dequant_int4(blocks, scales))
    # Weights are exact in fp32 (small ints times a power of two / an fp16 scale); products and
    # sums are fp32: |err| <= (K + 2 nb + 2) u sum|x w| + |bias| u (block sums, scale, total,
    # bias), plus 2^-149 per product for the denormal-scale rows.
    bound = (K + 2 * K // 32 + 2) * U * (np.abs(x) @ wabs.T) + np.abs(bias) * U + K * 2.0 ** -149
    assert np.all(np.abs(y - ref) <= bound)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", ["mxfp4", "int4"])
@pytest.mark.parametrize("tokens", [1, 6, 11])   # token tiles of 4: 1; 4 + 2; 4 + 4 + 3
def test_gemm4bit_int8_activations_match_the_stated_quantization(isa, fmt, tokens):
    blocks, scales, bias = gemm_case(fmt, seed=2)
    x = int8_activations(tokens, K, seed=3)
    y = gemm_session(fmt, blocks, scales, bias, activations="int8", isa=isa).run(None, {"x": x[None]})[0][0]
    # The stated scheme (kernels.h): per token and block of 32, d = amax/127 (float32),
    # q = round-half-even(x / d) in [-127, 127]; int32 block dots with the weight integers.
    xb = x.reshape(tokens, -1, 32)
    d = (np.abs(xb).max(-1) / np.float32(127)).astype(np.float32)
    q = np.rint(xb / np.where(d > 0, d, 1)[..., None]).astype(np.float64)
    wi, ws = int_weights(fmt, blocks, scales)
    dots = np.einsum("tbi,nbi->tnb", q, wi.reshape(N, -1, 32))
    ref = np.einsum("tnb,nb,tb->tn", dots, ws, d.astype(np.float64)) + bias
    # Block dots are exact (int32: the x86 kernels' unsigned-weight offset cancels inside them,
    # kernels.h Acts::xoff); the float part: scale products, nb fused adds, the final lane sum
    # and the bias, each one rounding of at most the magnitude below:
    # |err| <= (nb + 8) u (sum_b |s d| sum_i |w_i| |q_i|) + |bias| u.
    mag = np.einsum("tbi,nbi->tnb", np.abs(q), np.abs(wi.reshape(N, -1, 32)))
    scale = np.einsum("tnb,nb,tb->tn", mag, ws, d.astype(np.float64))
    assert np.all(np.abs(y - ref) <= (K // 32 + 8) * U * scale + np.abs(bias) * U + K * 2.0 ** -149)
    exact = rk.gemm_4bit(x.astype(np.float64), blocks, scales, bias, format=fmt, in_features=K, out_features=N)
    assert np.abs(y - exact).max() > 0      # the mode really quantizes


def test_gemm4bit_threads_split_rows_not_sums():
    # Each output row is computed whole by one task: 1 and 2 threads give identical bits.
    blocks, scales, bias = gemm_case("mxfp4")
    x = np.random.default_rng(4).standard_normal((1, 9, K)).astype(np.float32)
    runs = [gemm_session("mxfp4", blocks, scales, bias, threads=t).run(None, {"x": x})[0] for t in (1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_gemm4bit_rejects_bad_shapes_in_one_line():
    blocks, scales, bias = gemm_case("mxfp4")
    sess = gemm_session("mxfp4", blocks, scales, bias, x_dim="k")     # K left symbolic in the graph
    with pytest.raises(Exception, match=r"Gemm4bit: input 'input' has shape \(1, 2, 100\), last dim expected 288"):
        sess.run(None, {"x": np.zeros((1, 2, 100), np.float32)})
    with pytest.raises(Exception, match="'weight_scales' must be float16 for format int4"):   # E8M0 bytes
        gemm_session("int4", blocks, scales, bias).run(None, {"x": np.zeros((1, 1, K), np.float32)})


# ---- MoeMxfp4 -------------------------------------------------------------------------------
E, H, I, TOP_K = 8, 288, 160, 4


def moe_weights(seed=0):
    rng = np.random.default_rng(seed)
    mx = lambda n, k: (rng.integers(0, 256, (E, n, k // 32, 16), dtype=np.uint8),   # noqa: E731
                       rng.integers(119, 123, (E, n, k // 32), dtype=np.uint8))
    f = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)   # noqa: E731
    gub, gus = mx(2 * I, H)
    db, ds = mx(H, I)
    return dict(router_weight=f(E, H), router_bias=f(E), gate_up_blocks=gub, gate_up_scales=gus,
                gate_up_bias=f(E, 2 * I), down_blocks=db, down_scales=ds, down_bias=f(E, H))


MOE_WEIGHTS = [p.name for p in opset.MOE_MXFP4.inputs[1:] if p.name != "new_len"]


def moe_session(w, new_len=False, **kw):
    s = opset.MOE_MXFP4
    node = helper.make_node(s.op_type, ["x"] + MOE_WEIGHTS + (["new_len"] if new_len else []), ["y"],
                            domain=opset.DOMAIN, num_experts=E, top_k=TOP_K, hidden_size=H, intermediate_size=I)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", H])]
    if new_len:
        inputs.append(helper.make_tensor_value_info("new_len", TensorProto.INT32, ["b"]))
    return session([node], inputs, w, **kw)


def moe_reference(w, x, new_len=None):
    attrs = dict(num_experts=E, top_k=TOP_K, hidden_size=H, intermediate_size=I, swiglu_limit=7.0,
                 swiglu_alpha=1.702, swiglu_linear_offset=1.0)
    return rk.moe_mxfp4(x.astype(np.float64), *[w[name] for name in MOE_WEIGHTS], new_len, **attrs)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tokens", [1, 7])
def test_moe_mxfp4_fp32_activations_match_the_reference(isa, tokens):
    w = moe_weights()
    x = np.random.default_rng(5).standard_normal((tokens, H)).astype(np.float32)
    y = moe_session(w, isa=isa).run(None, {"x": x})[0]
    ref = moe_reference(w, x)
    # fp32 sums of K <= 288 exact products: <= K u = 1.7e-5 relative per GEMM worst case (a
    # random walk gives ~1e-6); two chained GEMMs through SwiGLU (slope <= 1.1) and the routing
    # softmax: 5e-5 of the output scale. Routing itself is stable here (random logits, no ties).
    assert np.abs(y - ref).max() <= 5e-5 * np.abs(ref).max()


@pytest.mark.parametrize("isa", ISAS)
def test_moe_mxfp4_int8_activations_error_bounded(isa):
    w = moe_weights(1)
    x = np.random.default_rng(6).standard_normal((7, H)).astype(np.float32)
    y = moe_session(w, activations="int8", isa=isa).run(None, {"x": x})[0]
    ref = moe_reference(w, x)
    # Both GEMM inputs rounded to int8 per block of 32 (step 1/127 of the block max): ~1% of the
    # output scale (as ORT's int8 QMoE, tests/test_lower_ort.py); 3%, and it must differ.
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    assert 1e-6 < rel < 3e-2


def test_moe_mxfp4_decode_reads_only_the_selected_experts():
    # Poison every expert's blocks with NaN-producing scales except the 4 the token routes to:
    # the output stays finite and unchanged, so the kernel never touched the others.
    w = moe_weights(2)
    x = np.random.default_rng(7).standard_normal((1, H)).astype(np.float32)
    logits = x @ w["router_weight"].T + w["router_bias"]
    chosen = np.argsort(-logits[0], kind="stable")[:TOP_K]
    clean = moe_session(w).run(None, {"x": x})[0]
    poisoned = {k: v.copy() for k, v in w.items()}
    others = np.setdiff1d(np.arange(E), chosen)
    for p in ("gate_up_scales", "down_scales"):
        poisoned[p][others] = 255                          # 2^127: inf/NaN if ever multiplied
    np.testing.assert_array_equal(moe_session(poisoned).run(None, {"x": x})[0], clean)


@pytest.mark.parametrize("activations", ["fp32", "int8"])
def test_moe_mxfp4_padded_rows_are_not_routed_and_give_zeros(activations):
    # 3 rows of 5 tokens holding 5, 2 and 0 real ones. Padded tokens carry NaN: routed, they
    # would give NaN rows; skipped, they give exact zeros. Real tokens come out bit-identical
    # to a run on the real tokens alone (each token's sums do not depend on the others).
    w = moe_weights(3)
    rng = np.random.default_rng(8)
    new_len = np.array([5, 2, 0], np.int32)
    real = (np.arange(5)[None, :] < new_len[:, None]).reshape(-1)
    x = rng.standard_normal((15, H)).astype(np.float32)
    x[~real] = np.nan
    y = moe_session(w, new_len=True, activations=activations).run(None, {"x": x, "new_len": new_len})[0]
    assert (y[~real] == 0).all()
    alone = moe_session(w, activations=activations).run(None, {"x": x[real]})[0]
    np.testing.assert_array_equal(y[real], alone)
    ref = moe_reference(w, x, new_len)
    assert (ref[~real] == 0).all()
    if activations == "fp32":   # bound: test_moe_mxfp4_fp32_activations_match_the_reference
        assert np.abs(y - ref).max() <= 5e-5 * np.abs(ref).max()
    none = np.zeros(3, np.int32)   # a step where no row brings a token: all zeros, no expert touched
    assert (moe_session(w, new_len=True).run(None, {"x": x, "new_len": none})[0] == 0).all()


def test_moe_mxfp4_rejects_new_len_that_does_not_split_the_tokens():
    w = moe_weights()
    with pytest.raises(Exception, match=r"MoeMxfp4: input 'new_len' must be int32 \[batch\] with the 7 tokens"):
        moe_session(w, new_len=True).run(None, {"x": np.zeros((7, H), np.float32),
                                                "new_len": np.array([1, 1, 1], np.int32)})
    with pytest.raises(rk.KernelError, match="whole number of its batch rows"):
        moe_reference(w, np.zeros((7, H), np.float32), np.array([1, 1, 1], np.int32))


def test_moe_mxfp4_rejects_wrong_expert_shape():
    w = moe_weights()
    w["down_bias"] = w["down_bias"][:, :-1].copy()
    with pytest.raises(Exception, match=r"MoeMxfp4: input 'down_bias' has shape \(8, 287\), expected \(8, 288\)"):
        moe_session(w).run(None, {"x": np.zeros((1, H), np.float32)})


# ---- registration, dispatch, build ---------------------------------------------------------
def test_library_reports_its_code_path_and_refuses_unknown_settings():
    assert cpu_kernels.isa() in cpu_kernels.ISAS and cpu_kernels.isa("portable") == "portable"
    so = ort.SessionOptions()
    so.add_session_config_entry("gptoss_edge.cpu_activations", "int7")
    with pytest.raises(Exception, match="gptoss_edge.cpu_activations must be 'fp32' or 'int8', got 'int7'"):
        so.register_custom_ops_library(str(cpu_kernels.library_path()))
    missing = next((i for i in cpu_kernels.ISAS if not cpu_kernels.isa(i)), None)
    if missing:
        with pytest.raises(Exception, match=f"gptoss_edge.cpu_isa '{missing}' is not available"):
            cpu_kernels.register(ort.SessionOptions(), "fp32", missing)
    with pytest.raises(ValueError, match="activations must be one of fp32, int8"):
        cpu_kernels.register(ort.SessionOptions(), "int4")
