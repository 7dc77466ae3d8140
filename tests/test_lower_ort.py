"""Each ONNX Runtime lowering against a direct numpy computation at tiny size.

One-node canonical graphs (our op set) are lowered by compiler.lower_ort, written with
external data and run on ONNX Runtime's CPU provider (with our CPU kernel library when the
lowered graph keeps our ops)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from gptoss_edge import cpu_kernels
from gptoss_edge.compiler import dense4bit
from gptoss_edge.compiler import expert_formats as fmt
from gptoss_edge.compiler import lower_ort, mxfp4, opset, reference_kernels
from gptoss_edge.compiler.graph import onnx_io
from gptoss_edge.compiler.graph.ir import Graph, from_array
from gptoss_edge.compiler.graph.ops import our_node

IO = opset.ENGINE_IO
E, H, I, TOPK = 4, 64, 32, 2


def run_graph(g: Graph, tmp_path, feeds: dict, isa: str = "auto", **lower_kw) -> list[np.ndarray]:
    lowered = lower_ort.lower(g, **lower_kw)
    model, _ = onnx_io.save(lowered, tmp_path / "m.onnx")
    so = ort.SessionOptions()
    if any(n.domain == opset.DOMAIN for n in lowered.nodes):
        cpu_kernels.register(so, "int8" if lower_kw.get("activations") == "int8" else "fp32", isa)
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def canonical(name: str) -> Graph:
    return Graph(name, opsets={"": 21, opset.DOMAIN: opset.OPSET_VERSION})


# ---- MoE ---------------------------------------------------------------------------------------
def random_experts(rng):
    def mx(n, k):   # random MXFP4 codes, scales 2^-9..2^-4 keep outputs O(1)
        return (rng.integers(0, 256, (E, n, k // 32, 16), dtype=np.uint8),
                rng.integers(118, 124, (E, n, k // 32), dtype=np.uint8))
    gub, gus = mx(2 * I, H)
    db, ds = mx(H, I)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)   # noqa: E731
    return dict(router_weight=f(E, H) * .3, router_bias=f(E) * .3, gate_up_blocks=gub, gate_up_scales=gus,
                gate_up_bias=f(E, 2 * I) * .3, down_blocks=db, down_scales=ds, down_bias=f(E, H) * .3)


def moe_numpy(x, w, gate_up, down):
    """gpt-oss MLP on float weights [E, N, K] (the formula of opset.MOE_MXFP4)."""
    logits = x @ w["router_weight"].T + w["router_bias"]
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(x.shape[0]):
        top = np.argsort(-logits[t], kind="stable")[:TOPK]
        p = np.exp(logits[t, top] - logits[t, top].max())
        p /= p.sum()
        for e, pe in zip(top, p):
            gu = gate_up[e] @ x[t] + w["gate_up_bias"][e]
            g, lin = np.minimum(gu[0::2], 7.0), np.clip(gu[1::2], -7.0, 7.0)
            a = g / (1 + np.exp(-1.702 * g)) * (lin + 1)
            out[t] += pe * (down[e] @ a + w["down_bias"][e])
    return out.astype(np.float32)


def moe_graph(w) -> Graph:
    g = canonical("moe")
    g.add_input("x", TensorProto.FLOAT, ["tokens", H])
    g.add_output("y", TensorProto.FLOAT, ["tokens", H])
    ports = {k: g.add_initializer(from_array(f"/moe/{k}", v)) for k, v in w.items()}
    ports["hidden"] = "x"
    our_node(g, opset.MOE_MXFP4, "/moe/experts", ports, outputs=["y"], num_experts=E, top_k=TOPK,
             hidden_size=H, intermediate_size=I)
    return g


@pytest.fixture(scope="module")
def moe_case():
    rng = np.random.default_rng(7)
    w = random_experts(rng)
    x = rng.standard_normal((9, H)).astype(np.float32)
    gate_up = mxfp4.decode(w["gate_up_blocks"], w["gate_up_scales"])
    down = mxfp4.decode(w["down_blocks"], w["down_scales"])
    return w, x, gate_up, down, moe_numpy(x, w, gate_up, down)


def test_moe_float_is_exact(moe_case, tmp_path):
    w, x, _, _, ref = moe_case
    (y,) = run_graph(moe_graph(w), tmp_path, {"x": x}, experts="float")
    # Same float32 weights and formula; only summation order differs (K <= 64): ~1e-7 relative.
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_moe_int8_weights_lossless_activation_error_bounded(moe_case, tmp_path):
    w, x, gate_up, down, ref = moe_case
    q, s = fmt._to_int(w["gate_up_blocks"], w["gate_up_scales"], 8)
    assert np.array_equal(q.astype(np.float32).reshape(*s.shape, 32) * s[..., None],
                          gate_up.reshape(*s.shape, 32))          # MXFP4 -> int8 is exact
    (y,) = run_graph(moe_graph(w), tmp_path, {"x": x}, experts="int8", activations="int8")
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    # ORT's CPU int8 QMoE quantizes activations to int8 (no fp32 kernel): each GEMM input is off
    # by <= 1/254 of its block max per element; two GEMMs -> ~1% of the output scale (measured
    # 0.8% when probing). 3% leaves room for a near-tie in the SwiGLU clamp, not for a layout bug
    # (a wrong layout/zero point gives O(100%)).
    assert 1e-6 < rel < 3e-2


def test_moe_int4_matches_its_dequantized_weights(moe_case, tmp_path):
    w, x, gate_up, down, ref = moe_case
    deq = {}
    for p in ("gate_up", "down"):
        q, s = fmt._to_int(w[f"{p}_blocks"], w[f"{p}_scales"], 4)
        deq[p] = fmt.dequant_int(fmt._pack_u4(q), s, 4)
    ref4 = moe_numpy(x, w, deq["gate_up"], deq["down"])
    (y,) = run_graph(moe_graph(w), tmp_path, {"x": x}, experts="int4")
    # accuracy_level 0 keeps float32 activations: the only error vs the int4 weights is
    # summation order (~1e-7 relative).
    assert np.abs(y - ref4).max() <= 1e-5 * np.abs(ref4).max()
    # int4 weight error vs the MXFP4 original: symmetric scale max|w|/7 per 32-block, so each
    # weight is within scale/2 = max/14 of its value (plus nothing else).
    blocks = gate_up.reshape(E, 2 * I, -1, 32)
    err = np.abs(deq["gate_up"].reshape(blocks.shape) - blocks).max(-1)
    assert np.all(err <= np.abs(blocks).max(-1) / 14 * (1 + 1e-6))
    assert np.abs(y - ref).max() > 0          # lossy: it must differ from the MXFP4 result


# ---- dense 4 bit ----------------------------------------------------------------------------------
def dense_graph(w: np.ndarray, b: np.ndarray) -> Graph:
    n, k = w.shape
    g = canonical("dense")
    g.add_input("x", TensorProto.FLOAT, ["b", "s", k])
    g.add_output("y", TensorProto.FLOAT, ["b", "s", n])
    wt = g.add_initializer(from_array("/lin/weight_T", np.ascontiguousarray(w.T)))
    mm = g.op("MatMul", ["x", wt], "/lin/matmul")
    g.node("Add", [mm, g.add_initializer(from_array("/lin/bias", b))], "/lin/add_bias", outputs=["y"])
    return g


@pytest.mark.parametrize("dense_format", ["mxfp4", "int4"])
def test_dense_4bit_is_our_gemm4bit_on_the_stated_blocks(tmp_path, dense_format):
    rng = np.random.default_rng(3)
    k, n = 96, 40
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    lowered = lower_ort.lower(dense_graph(w, b), dense="4bit", dense_format=dense_format)
    assert [(n_.domain, n_.op_type) for n_ in lowered.nodes] == [(opset.DOMAIN, "Gemm4bit")]   # Add absorbed
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    (y,) = run_graph(dense_graph(w, b), tmp_path, {"x": x}, dense="4bit", dense_format=dense_format)
    blocks, scales = dense4bit.QUANTIZERS[dense_format](w)
    ref = reference_kernels.gemm_4bit(x.astype(np.float64), blocks, scales, b, format=dense_format,
                                      in_features=k, out_features=n)
    # Same 4-bit weights (decoded exactly in fp32), float32 activations: only fp32 summation
    # order differs, K = 96 terms: |err| <= 96 * 2^-24 * sum|x w| ~ 6e-6 relative; 1e-5 asserted.
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_dense_8bit_is_our_gemm8bit_on_q8_blocks(tmp_path):
    rng = np.random.default_rng(4)
    k, n = 96, 40
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    lowered = lower_ort.lower(dense_graph(w, b), dense="8bit")
    assert [(n_.domain, n_.op_type) for n_ in lowered.nodes] == [(opset.DOMAIN, "Gemm8bit")]   # Add absorbed
    assert {i.dtype for i in lowered.initializers.values()} >= {np.dtype(np.int8), np.dtype(np.float16)}
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    (y,) = run_graph(dense_graph(w, b), tmp_path, {"x": x}, dense="8bit")
    q, d = dense4bit.quantize_q8(w)
    ref = reference_kernels.gemm_8bit(x.astype(np.float64), q, d, b, in_features=k, out_features=n)
    # Same 8-bit weights (exact in fp32), float32 activations: fp32 summation order only, 96
    # terms: |err| <= 96 * 2^-24 * sum|x w| ~ 6e-6 relative; 1e-5 asserted.
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    # and q8 is close to the float layer: |w err| <= d/2 = max|w_block| / 254 per weight
    exact = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert np.abs(y - exact).max() <= np.abs(x).sum(-1).max() * np.abs(w).max() / 254 * 1.01
    with pytest.raises(ValueError, match="--dense must be one of"):
        lower_ort.lower(dense_graph(w, b), dense="2bit")


# ---- bf16 embedding -------------------------------------------------------------------------------
def embedding_graph(table: np.ndarray) -> Graph:
    g = canonical("embed")
    g.add_input("ids", TensorProto.INT64, ["b", "s"])
    g.add_output("y", TensorProto.FLOAT, ["b", "s", table.shape[1]])
    g.node("Gather", [g.add_initializer(from_array("/embed/weight", table)), "ids"], "/embed/gather",
           outputs=["y"], axis=0)
    return g


def test_bf16_embedding_is_exact_for_bf16_values(tmp_path):
    import ml_dtypes
    table = np.random.default_rng(2).standard_normal((50, 32)).astype(ml_dtypes.bfloat16).astype(np.float32)
    ids = np.array([[3, 49, 0]], np.int64)
    (y,) = run_graph(embedding_graph(table), tmp_path, {"ids": ids}, embedding="bf16")
    np.testing.assert_array_equal(y, table[ids])            # bf16 -> float32 is exact


def test_bf16_embedding_refuses_values_bf16_cannot_hold(tmp_path):
    table = np.full((50, 32), 1 + 2 ** -12, np.float32)      # needs 12 mantissa bits (bf16 has 7)
    with pytest.raises(ValueError, match="bfloat16.*--embedding float"):
        run_graph(embedding_graph(table), tmp_path, {"ids": np.zeros((1, 1), np.int64)}, embedding="bf16")


def test_int8_activations_option_for_4bit_gemms(moe_case, tmp_path):
    w, x, _, _, _ = moe_case
    deq = {p: fmt.dequant_int(fmt._pack_u4(q), s, 4)
           for p in ("gate_up", "down") for q, s in [fmt._to_int(w[f"{p}_blocks"], w[f"{p}_scales"], 4)]}
    ref4 = moe_numpy(x, w, deq["gate_up"], deq["down"])
    lowered = lower_ort.lower(moe_graph(w), experts="int4", activations="int8")
    assert [a.i for n in lowered.nodes for a in n.attribute if a.name == "accuracy_level"] == [4]
    (y,) = run_graph(moe_graph(w), tmp_path, {"x": x}, experts="int4", activations="int8")
    rel = np.abs(y - ref4).max() / np.abs(ref4).max()
    # MLAS quantizes both expert GEMM inputs to int8 per block of 32 (as for int8 experts):
    # ~1% of the output scale (0.96% when probing); 3% as for int8 experts. It must differ from
    # the float-activation result, or the option did nothing.
    assert 1e-6 < rel < 3e-2


# ---- mxfp4 experts: our MoeMxfp4 kernel on the checkpoint's bytes ---------------------------------
@pytest.mark.parametrize("isa", [i for i in cpu_kernels.ISAS if cpu_kernels.isa(i)])
def test_moe_mxfp4_kept_and_exact_on_every_code_path(moe_case, tmp_path, isa):
    w, x, _, _, ref = moe_case
    lowered = lower_ort.lower(moe_graph(w), experts="mxfp4")
    assert [(n.domain, n.op_type) for n in lowered.nodes] == [(opset.DOMAIN, "MoeMxfp4")]
    assert lowered.initializers["/moe/gate_up_blocks"].dtype == np.uint8      # bytes as shipped
    (y,) = run_graph(moe_graph(w), tmp_path, {"x": x}, isa=isa, experts="mxfp4")
    # MXFP4 values are exact in fp32; float32 activations: summation order only, as for the
    # float experts above (K <= 64: ~1e-7 relative).
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("isa", [i for i in cpu_kernels.ISAS if cpu_kernels.isa(i)])
def test_moe_mxfp4_int8_activations_error_bounded(moe_case, tmp_path, isa):
    w, x, _, _, ref = moe_case
    (y,) = run_graph(moe_graph(w), tmp_path, {"x": x}, isa=isa, experts="mxfp4", activations="int8")
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    # Both expert GEMM inputs quantized per block of 32 to int8 (step 1/127 of the block max),
    # as ORT's int8 QMoE above: ~1% of the output scale; same 3% bound, and it must differ.
    assert 1e-6 < rel < 3e-2


# ---- external data layout -------------------------------------------------------------------------
def test_external_tensors_of_2_mib_start_on_2_mib_boundaries(tmp_path):
    # ONNX Runtime maps each external tensor on its own; only a 2 MiB aligned file offset lets the
    # kernel map it with 2 MiB pages (onnx_io.HUGE_ALIGN). Smaller tensors stay page aligned.
    rng = np.random.default_rng(3)
    g = canonical("layout")
    g.add_input("x", TensorProto.FLOAT, [3])
    tables = {"small": rng.standard_normal((10, 3)).astype(np.float32),                 # 120 B: inline
              "page": rng.standard_normal((5000, 3)).astype(np.float32),                # 60 KB
              "big": rng.standard_normal(((2 << 20) // 12 + 1, 3)).astype(np.float32),  # just over 2 MiB
              "page2": rng.standard_normal((3000, 3)).astype(np.float32),
              "big2": rng.standard_normal((300000, 3)).astype(np.float32)}              # 3.4 MiB
    out = "x"
    for name, t in tables.items():
        g.add_output(f"y_{name}", TensorProto.FLOAT, [t.shape[0], 3])
        g.node("Mul", [g.add_initializer(from_array(name, t)), out], f"/mul_{name}", outputs=[f"y_{name}"])
    model_path, data_path = onnx_io.save(g, tmp_path / "m.onnx")
    m = onnx.load(str(model_path), load_external_data=False)
    offsets = {t.name: int({e.key: e.value for e in t.external_data}["offset"])
               for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert set(offsets) == {"page", "big", "page2", "big2"}
    assert offsets["big"] % onnx_io.HUGE_ALIGN == 0 and offsets["big2"] % onnx_io.HUGE_ALIGN == 0
    assert offsets["page2"] % onnx_io.ALIGN == 0 and offsets["page2"] % onnx_io.HUGE_ALIGN != 0
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.array([1.0, -2.0, 0.5], np.float32)
    for name, y in zip(tables, sess.run(None, {"x": x})):
        np.testing.assert_array_equal(y, tables[name] * x)          # every tensor reads back intact
    assert data_path.stat().st_size == offsets["big2"] + tables["big2"].nbytes
