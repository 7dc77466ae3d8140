"""Attention block (after its input norm): q/k/v projections with bias -> SinkAttention (RoPE,
GQA, sinks, window, KV cache; our op) -> o_proj."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from gptoss_edge.compiler import opset
from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.linear import build_linear
from gptoss_edge.compiler.graph.ops import WeightSource, our_node, weight

IO = opset.ENGINE_IO


def cache_capacity_dim(cfg, layer: int) -> int | str:
    """Canonical KV cache capacity: a `window`-slot ring on sliding layers, else max context."""
    return cfg.sliding_window if cfg.is_sliding(layer) else "kv_capacity"


def add_cache_io(g: Graph, layer: int, capacity: int | str) -> tuple[str, str]:
    cfg_shape = lambda: ["batch", "num_kv_heads", capacity, "head_dim"]   # noqa: E731
    pk = g.add_input(IO.past_key(layer), TensorProto.FLOAT, cfg_shape())
    pv = g.add_input(IO.past_value(layer), TensorProto.FLOAT, cfg_shape())
    g.add_output(IO.present_key(layer), TensorProto.FLOAT, cfg_shape())
    g.add_output(IO.present_value(layer), TensorProto.FLOAT, cfg_shape())
    return pk, pv


def build_attention(g: Graph, ckpt: WeightSource, layer: int, h: str, past_len: str, new_len: str,
                    rope_cos: str, rope_sin: str) -> str:
    """h: normed hidden [batch, seq, hidden]; returns the o_proj output [batch, seq, hidden].
    Adds the layer's past/present KV graph inputs/outputs (ENGINE_IO names)."""
    cfg = ckpt.config
    key = f"model.layers.{layer}.self_attn"
    name = f"/layers.{layer}/attn"
    q = build_linear(g, ckpt, f"{key}.q_proj", h, f"{name}/q_proj", cfg.hidden_size, cfg.q_size)
    k = build_linear(g, ckpt, f"{key}.k_proj", h, f"{name}/k_proj", cfg.hidden_size, cfg.kv_size)
    v = build_linear(g, ckpt, f"{key}.v_proj", h, f"{name}/v_proj", cfg.hidden_size, cfg.kv_size)
    sinks = weight(g, ckpt, f"{key}.sinks", f"{name}/sinks", [cfg.num_attention_heads])
    pk, pv = add_cache_io(g, layer, cache_capacity_dim(cfg, layer))
    out, _, _ = our_node(
        g, opset.SINK_ATTENTION, f"{name}/sink_attention",
        dict(query=q, key=k, value=v, sinks=sinks, rope_cos=rope_cos, rope_sin=rope_sin,
             past_key=pk, past_value=pv, past_len=past_len, new_len=new_len),
        outputs=[f"{name}/sink_attention", IO.present_key(layer), IO.present_value(layer)],
        num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim, window=cfg.sliding_window if cfg.is_sliding(layer) else 0,
        scale=float(1.0 / np.sqrt(cfg.head_dim)))
    return build_linear(g, ckpt, f"{key}.o_proj", out, f"{name}/o_proj", cfg.q_size, cfg.hidden_size)
