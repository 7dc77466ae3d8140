"""Plain numpy formulas of the three ops, written from the op-set docstrings. Used only when
gptoss_edge.compiler.reference_kernels (the project's reference) cannot be imported on the GPU
machine; tests/test_gpu_check.py proves they agree with it on CPU. float64 arithmetic."""
from __future__ import annotations

import numpy as np

E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6])


def nibbles(blocks: np.ndarray) -> np.ndarray:
    b = blocks.view(np.uint8)
    out = np.empty(b.shape[:-1] + (32,), np.uint8)
    out[..., 0::2], out[..., 1::2] = b & 15, b >> 4
    return out


def dequant(blocks: np.ndarray, scales: np.ndarray, fmt: str = "mxfp4") -> np.ndarray:
    """[..., N, K/32, 16] + [..., N, K/32] -> float64 [..., N, K]."""
    q = nibbles(blocks)
    if fmt == "mxfp4":
        w = E2M1[q] * np.exp2(scales.view(np.uint8).astype(np.float64) - 127)[..., None]
    else:
        w = (q.astype(np.float64) - 8) * scales.astype(np.float64)[..., None]
    return w.reshape(*w.shape[:-2], -1)


def moe_mxfp4(hidden, router_weight, router_bias, gu_blocks, gu_scales, gu_bias, dn_blocks, dn_scales, dn_bias,
              new_len=None, *, top_k, swiglu_limit=7.0, swiglu_alpha=1.702, swiglu_linear_offset=1.0, **_):
    x = hidden.astype(np.float64)
    # exact logits rounded once to float32, as reference_kernels.router_logits (BLAS-order free)
    logits = (x @ router_weight.T.astype(np.float64) + router_bias.astype(np.float64)).astype(np.float32)
    experts = np.argsort(-logits, axis=-1, kind="stable")[:, :top_k]
    sel = np.take_along_axis(logits, experts, -1).astype(np.float64)
    w = np.exp(sel - sel[:, :1])
    w /= w.sum(-1, keepdims=True)
    if new_len is not None:  # padded tokens (s >= new_len[b] of rows of tokens/batch): not routed
        seq = len(x) // len(new_len)
        experts[~(np.arange(seq)[None, :] < np.asarray(new_len)[:, None]).reshape(-1)] = -1
    out = np.zeros_like(x)
    for e in np.unique(experts[experts >= 0]):
        rows, slot = np.nonzero(experts == e)
        gu = x[rows] @ dequant(gu_blocks[e], gu_scales[e]).T + gu_bias[e]
        g = np.minimum(gu[:, 0::2], swiglu_limit)
        lin = np.clip(gu[:, 1::2], -swiglu_limit, swiglu_limit)
        a = g / (1 + np.exp(-swiglu_alpha * g)) * (lin + swiglu_linear_offset)
        y = a @ dequant(dn_blocks[e], dn_scales[e]).T + dn_bias[e]
        np.add.at(out, rows, w[rows, slot][:, None] * y)
    return out


def gemm_4bit(x, blocks, scales, bias=None, *, format="mxfp4", **_):
    y = x.astype(np.float64) @ dequant(blocks, scales, format).T
    return y if bias is None else y + bias


def _rope(x, cos, sin):
    h = x.shape[-1] // 2
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], -1)


def sink_attention(q, k, v, sinks, cos, sin, past_k, past_v, past_len, new_len, *, num_heads, num_kv_heads,
                   head_dim, window, scale, store_keys=None, **_):
    """-> (output [B,S,H*D] float64, present_k, present_v in the cache dtype).
    store_keys(k [n, KVH, D], cos [n, D/2], sin [n, D/2]) -> this step's keys as stored in the
    cache, the values attention then uses; default: RoPE in float64, cast to the cache dtype."""
    store_keys = store_keys or (lambda kk, c, s: _rope(kk.astype(np.float64), c, s).astype(past_k.dtype))
    B, S = q.shape[:2]
    H, KVH, D = num_heads, num_kv_heads, head_dim
    G = H // KVH
    out = np.zeros((B, S, H * D))
    pk, pv = past_k.copy(), past_v.copy()
    for b in range(B):
        p0, n = int(past_len[b]), int(new_len[b])
        if n == 0:
            continue
        pos = p0 + np.arange(n)
        qr = _rope(q[b, :n].astype(np.float64).reshape(n, H, D), cos[pos], sin[pos])
        kr = store_keys(k[b, :n].reshape(n, KVH, D), cos[pos], sin[pos])
        vn = v[b, :n].reshape(n, KVH, D).astype(past_k.dtype)
        old = np.arange(max(0, p0 - window) if window else 0, p0)
        slots = old % window if window else old
        keys = np.concatenate([past_k[b][:, slots].transpose(1, 0, 2), kr]).astype(np.float64)
        vals = np.concatenate([past_v[b][:, slots].transpose(1, 0, 2), vn]).astype(np.float64)
        kpos = np.concatenate([old, pos])
        for h in range(H):
            sc = keys[:, h // G] @ qr[:, h].T * scale  # [m, n]
            mask = kpos[:, None] <= pos[None, :]
            if window:
                mask &= pos[None, :] - kpos[:, None] < window
            sc = np.where(mask, sc, -np.inf)
            top = np.maximum(sc.max(0), sinks[h])
            p = np.exp(sc - top)
            p /= p.sum(0) + np.exp(sinks[h] - top)
            out[b, :n, h * D:(h + 1) * D] = p.T @ vals[:, h // G]
        keep = slice(max(0, n - window), n) if window else slice(0, n)
        s_new = pos[keep] % window if window else pos[keep]
        pk[b][:, s_new] = kr[keep].transpose(1, 0, 2)
        pv[b][:, s_new] = vn[keep].transpose(1, 0, 2)
    return out, pk, pv
