"""Numpy reference kernels for the gptoss_edge op set, straight from the opset docstrings.

Each op is a pure function (`moe_mxfp4`, `gemm_4bit`, `gemm_8bit`, `sink_attention`) plus an
`onnx.reference.op_run.OpRun` subclass built from the OpSpec (class name = op_type, domain =
opset.DOMAIN), so `ReferenceEvaluator(model, new_ops=REFERENCE_OPS)` runs the exact graph the
TensorRT parser consumes. Arithmetic is float64 (router logits rounded to float32, as the spec says), the
result is cast to the node's activation type. Slow and exact: the yardstick for the plugins.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from onnx.reference.op_run import OpRun

from gptoss_edge.compiler import mxfp4, opset


class KernelError(ValueError):
    """Inputs that break an op's contract; the message names the op and the port."""


# ---- 4-bit block decoding -------------------------------------------------------------------

def _as_bytes(a: np.ndarray) -> np.ndarray:
    """uint8 view of a BYTES port (uint8 canonical, int8 in TensorRT graphs; same bits)."""
    a = np.ascontiguousarray(a)
    if a.dtype not in (np.uint8, np.int8):
        raise KernelError(f"packed bytes must be uint8 or int8, got {a.dtype}")
    return a.view(np.uint8)


def dequant_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """MXFP4 [..., N, K/32, 16] + E8M0 [..., N, K/32] -> float64 [..., N, K] (compiler/mxfp4.py)."""
    return mxfp4.decode(_as_bytes(blocks), _as_bytes(scales)).astype(np.float64)


def dequant_int4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Offset-binary int4 [N, K/32, 16] + float16 scales [N, K/32] -> float64 [N, K]."""
    q = mxfp4.unpack_nibbles(_as_bytes(blocks)).astype(np.float64) - 8.0
    w = q * scales.astype(np.float64)[..., None]
    return w.reshape(*w.shape[:-2], -1)


def _check_shape(op: str, port: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != tuple(shape):
        raise KernelError(f"{op}: input {port!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")


# ---- MoeMxfp4 -------------------------------------------------------------------------------

def router_logits(hidden: np.ndarray, router_weight: np.ndarray, router_bias: np.ndarray) -> np.ndarray:
    """float32 logits [T, E]: hidden @ router_weight^T + router_bias, exact, rounded once to float32.

    A float32 matmul would make the reference depend on the BLAS build: OpenBLAS's AVX2 and
    AVX-512 kernels sum float32 dot products in different orders and disagree by several ulps,
    which the softmax turns into output differences of ~1e-4. Here every product of two float32
    (or float16/bfloat16) values is exact in float64 and the float64 sum of H terms is within
    H*2^-53*sum|x*w| of the exact value (3.2e-13*sum|x*w| at H=2880, 1.9e5 times below float32's
    half-ulp 2^-24), so the float32 result is the same on every CPU unless the exact logit lies
    that close to a float32 rounding midpoint.
    """
    exact = (hidden.astype(np.float64) @ router_weight.astype(np.float64).T
             + router_bias.astype(np.float64))
    return exact.astype(np.float32)


def route(hidden: np.ndarray, router_weight: np.ndarray, router_bias: np.ndarray,
          top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 router logits -> (experts [T, k], weights [T, k] float64). Ties: lower index
    first (stable sort); softmax over the k selected logits only."""
    logits = router_logits(hidden, router_weight, router_bias)
    experts = np.argsort(-logits, axis=-1, kind="stable")[:, :top_k]
    sel = np.take_along_axis(logits, experts, axis=-1).astype(np.float64)
    e = np.exp(sel - sel.max(axis=-1, keepdims=True))
    return experts, e / e.sum(axis=-1, keepdims=True)


def swiglu(gate_up: np.ndarray, limit: float, alpha: float, offset: float) -> np.ndarray:
    """gpt-oss clamped SwiGLU on interleaved rows (even = gate, odd = linear)."""
    g = np.minimum(gate_up[..., 0::2], limit)
    lin = np.clip(gate_up[..., 1::2], -limit, limit)
    return g / (1.0 + np.exp(-alpha * g)) * (lin + offset)


def real_tokens(tokens: int, new_len) -> np.ndarray:
    """Bool [tokens]: which of `tokens` (batch rows of tokens / batch, flattened) are real under
    MoeMxfp4's optional new_len [batch]; all of them without it."""
    if new_len is None:
        return np.ones(tokens, dtype=bool)
    new_len = np.asarray(new_len)
    if new_len.ndim != 1 or new_len.size == 0 or tokens % new_len.size:
        raise KernelError(f"MoeMxfp4: input 'new_len' has shape {new_len.shape}; the {tokens} tokens "
                          "must be a whole number of its batch rows")
    seq = tokens // new_len.size
    return (np.arange(seq)[None, :] < new_len[:, None]).reshape(-1)


def moe_mxfp4(hidden, router_weight, router_bias, gate_up_blocks, gate_up_scales, gate_up_bias,
              down_blocks, down_scales, down_bias, new_len=None, *, num_experts: int, top_k: int,
              hidden_size: int, intermediate_size: int, swiglu_limit: float,
              swiglu_alpha: float, swiglu_linear_offset: float) -> np.ndarray:
    op, E, H, I = "MoeMxfp4", num_experts, hidden_size, intermediate_size
    if hidden.ndim != 2 or hidden.shape[1] != H:
        raise KernelError(f"{op}: input 'hidden' has shape {hidden.shape}, expected (tokens, {H})")
    if not 0 < top_k <= E:
        raise KernelError(f"{op}: top_k={top_k} with {E} experts")
    for port, a, shape in (("router_weight", router_weight, (E, H)), ("router_bias", router_bias, (E,)),
                           ("gate_up_blocks", gate_up_blocks, (E, 2 * I, H // 32, 16)),
                           ("gate_up_scales", gate_up_scales, (E, 2 * I, H // 32)),
                           ("gate_up_bias", gate_up_bias, (E, 2 * I)),
                           ("down_blocks", down_blocks, (E, H, I // 32, 16)),
                           ("down_scales", down_scales, (E, H, I // 32)), ("down_bias", down_bias, (E, H))):
        _check_shape(op, port, a, shape)
    real = real_tokens(hidden.shape[0], new_len)
    x = hidden.astype(np.float64)
    experts, weights = route(hidden, router_weight, router_bias, top_k)
    experts[~real] = -1                                  # padded tokens: not routed, output 0
    out = np.zeros_like(x)
    for e in np.unique(experts[experts >= 0]):
        rows, slot = np.nonzero(experts == e)
        gu = x[rows] @ dequant_mxfp4(gate_up_blocks[e], gate_up_scales[e]).T + gate_up_bias[e]
        a = swiglu(gu, swiglu_limit, swiglu_alpha, swiglu_linear_offset)
        y = a @ dequant_mxfp4(down_blocks[e], down_scales[e]).T + down_bias[e]
        np.add.at(out, rows, weights[rows, slot][:, None] * y)
    return out.astype(hidden.dtype)


# ---- Gemm4bit -------------------------------------------------------------------------------

def gemm_4bit(input, weight_blocks, weight_scales, bias=None, *, format: str, in_features: int,
              out_features: int) -> np.ndarray:
    op, N, K = "Gemm4bit", out_features, in_features
    if input.shape[-1] != K:
        raise KernelError(f"{op}: input 'input' has last dim {input.shape[-1]}, expected {K}")
    _check_shape(op, "weight_blocks", weight_blocks, (N, K // 32, 16))
    _check_shape(op, "weight_scales", weight_scales, (N, K // 32))
    if format == "mxfp4":
        w = dequant_mxfp4(weight_blocks, weight_scales)
    elif format == "int4":
        if weight_scales.dtype != np.float16:
            raise KernelError(f"{op}: int4 needs float16 'weight_scales', got {weight_scales.dtype}")
        w = dequant_int4(weight_blocks, weight_scales)
    else:
        raise KernelError(f"{op}: attribute 'format' must be 'mxfp4' or 'int4', got {format!r}")
    y = input.astype(np.float64) @ w.T
    if bias is not None:
        _check_shape(op, "bias", bias, (N,))
        y = y + bias.astype(np.float64)
    return y.astype(input.dtype)


# ---- Gemm8bit -------------------------------------------------------------------------------

def gemm_8bit(input, weight, weight_scales, bias=None, *, in_features: int, out_features: int) -> np.ndarray:
    """y = x @ (q * d)^T (+ bias), float64 accumulation (q int8 [N, K/32, 32], d float16 [N, K/32])."""
    op, N, K = "Gemm8bit", out_features, in_features
    if input.shape[-1] != K:
        raise KernelError(f"{op}: input 'input' has last dim {input.shape[-1]}, expected {K}")
    _check_shape(op, "weight", weight, (N, K // 32, 32))
    _check_shape(op, "weight_scales", weight_scales, (N, K // 32))
    if weight.dtype != np.int8 or weight_scales.dtype != np.float16:
        raise KernelError(f"{op}: 'weight' must be int8 and 'weight_scales' float16, got "
                          f"{weight.dtype} and {weight_scales.dtype}")
    w = (weight.astype(np.float64) * weight_scales.astype(np.float64)[..., None]).reshape(N, K)
    y = input.astype(np.float64) @ w.T
    if bias is not None:
        _check_shape(op, "bias", bias, (N,))
        y = y + bias.astype(np.float64)
    return y.astype(input.dtype)


# ---- SinkAttention --------------------------------------------------------------------------

def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Half-split (NeoX) rotation. x [n, heads, D]; cos/sin [n, D/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def cached_positions(past_len: int, window: int) -> np.ndarray:
    """Positions a step can read from the cache: all (full) or the last `window` (ring)."""
    start = max(0, past_len - window) if window > 0 else 0
    return np.arange(start, past_len)


def cache_slots(positions: np.ndarray, window: int) -> np.ndarray:
    return positions % window if window > 0 else positions


def _attend(q, keys, values, q_pos, k_pos, sinks, window, scale, num_kv_heads):
    """q [n, H, D]; keys/values [m, Hkv, D]; -> [n, H*D]. Softmax with the sink logit appended."""
    n, H, D = q.shape
    G = H // num_kv_heads
    qg = q.reshape(n, num_kv_heads, G, D)
    scores = np.einsum("nhgd,mhd->hgnm", qg, keys) * scale
    mask = k_pos[None, :] <= q_pos[:, None]
    if window > 0:
        mask &= (q_pos[:, None] - k_pos[None, :]) < window
    scores = np.where(mask, scores, -np.inf)
    sink = sinks.astype(np.float64).reshape(num_kv_heads, G)[:, :, None, None]
    top = np.maximum(scores.max(axis=-1, keepdims=True), sink)
    p = np.exp(scores - top)
    p = p / (p.sum(axis=-1, keepdims=True) + np.exp(sink - top))
    return np.einsum("hgnm,mhd->nhgd", p, values).reshape(n, H * D)


def sink_attention(query, key, value, sinks, rope_cos, rope_sin, past_key, past_value, past_len,
                   new_len, *, num_heads: int, num_kv_heads: int, head_dim: int, window: int,
                   scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    op, H, Hkv, D = "SinkAttention", num_heads, num_kv_heads, head_dim
    if H % Hkv:
        raise KernelError(f"{op}: num_heads={H} is not a multiple of num_kv_heads={Hkv}")
    B, S = query.shape[:2]
    C = past_key.shape[2]
    _check_shape(op, "query", query, (B, S, H * D))
    _check_shape(op, "key", key, (B, S, Hkv * D))
    _check_shape(op, "value", value, (B, S, Hkv * D))
    _check_shape(op, "sinks", sinks, (H,))
    _check_shape(op, "past_key", past_key, (B, Hkv, C, D))
    _check_shape(op, "past_value", past_value, (B, Hkv, C, D))
    _check_shape(op, "rope_sin", rope_sin, rope_cos.shape)
    if rope_cos.ndim != 2 or rope_cos.shape[1] != D // 2:
        raise KernelError(f"{op}: 'rope_cos' has shape {rope_cos.shape}, expected (max_positions, {D // 2})")
    if window > 0 and C != window:
        raise KernelError(f"{op}: a window-{window} layer needs a {window}-slot ring cache, got {C} slots")
    kv_dtype = past_key.dtype
    out = np.zeros((B, S, H * D), np.float64)
    present_key, present_value = past_key.copy(), past_value.copy()
    for b in range(B):
        p0, n = int(past_len[b]), int(new_len[b])
        if p0 < 0 or not 0 <= n <= S:
            raise KernelError(f"{op}: row {b} has past_len={p0}, new_len={n} with seq={S}")
        if window == 0 and p0 + n > C:
            raise KernelError(f"{op}: row {b} needs {p0 + n} cache slots, the cache has {C}")
        if p0 + n > rope_cos.shape[0]:
            raise KernelError(f"{op}: row {b} reaches position {p0 + n - 1}, "
                              f"the RoPE tables hold {rope_cos.shape[0]}")
        if n == 0:
            continue
        pos = p0 + np.arange(n)
        cos, sin = rope_cos[pos].astype(np.float64), rope_sin[pos].astype(np.float64)
        q = rope(query[b, :n].astype(np.float64).reshape(n, H, D), cos, sin)
        # New keys/values go through the cache dtype, as a kernel that writes then reads would.
        k_new = rope(key[b, :n].astype(np.float64).reshape(n, Hkv, D), cos, sin).astype(kv_dtype)
        v_new = value[b, :n].reshape(n, Hkv, D).astype(kv_dtype)
        old = cached_positions(p0, window)
        old_slots = cache_slots(old, window)
        keys = np.concatenate([past_key[b][:, old_slots].transpose(1, 0, 2), k_new]).astype(np.float64)
        values = np.concatenate([past_value[b][:, old_slots].transpose(1, 0, 2), v_new]).astype(np.float64)
        out[b, :n] = _attend(q, keys, values, pos, np.concatenate([old, pos]), sinks, window, scale, Hkv)
        keep = slice(max(0, n - window), n) if window > 0 else slice(0, n)  # later position wins a slot
        slots = cache_slots(pos[keep], window)
        present_key[b][:, slots] = k_new[keep].transpose(1, 0, 2)
        present_value[b][:, slots] = v_new[keep].transpose(1, 0, 2)
    return out.astype(query.dtype), present_key, present_value


# ---- onnx.reference registration ------------------------------------------------------------

def _op_class(spec: opset.OpSpec, fn: Callable[..., Any]) -> type[OpRun]:
    """An OpRun subclass named spec.op_type in opset.DOMAIN that calls `fn`; node attributes
    are checked against the spec (TensorRT's plugin lookup attributes are ignored)."""

    def _run(self, *inputs, **attrs):
        for name in opset.PLUGIN_ATTRS:
            attrs.pop(name, None)
        attrs = {k: v.item() if isinstance(v, np.generic) else v.decode() if isinstance(v, bytes) else v
                 for k, v in attrs.items()}
        kw = opset.validate_attrs(spec, attrs)
        result = fn(*inputs, **kw)
        return result if isinstance(result, tuple) else (result,)

    return type(spec.op_type, (OpRun,), {"op_domain": opset.DOMAIN, "_run": _run,
                                         "__doc__": spec.doc})


KERNELS: dict[str, Callable[..., Any]] = {
    opset.MOE_MXFP4.op_type: moe_mxfp4,
    opset.GEMM_4BIT.op_type: gemm_4bit,
    opset.GEMM_8BIT.op_type: gemm_8bit,
    opset.SINK_ATTENTION.op_type: sink_attention,
}
REFERENCE_OPS: list[type[OpRun]] = [_op_class(opset.spec(name), fn) for name, fn in KERNELS.items()]
