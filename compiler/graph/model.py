"""The whole gpt-oss decoder as one canonical graph in our op set.

Inputs (ENGINE_IO): input_ids int64 [batch, seq], past_len int32 [batch], new_len int32 [batch],
logits_index int64 [batch, logits_rows] (the step positions whose logits are wanted: the final
norm and the lm_head run on those rows only, so a 512-token prompt chunk projects one row onto
the 201088-entry vocabulary, not 512),
past_key.i / past_value.i float32 [batch, num_kv_heads, capacity_i, head_dim] (capacity_i: the
window on sliding layers (ring), symbolic `kv_capacity` on full layers).
Outputs: logits float32 [batch, logits_rows, vocab], present_key.i / present_value.i (same shapes).
Nothing is read from the checkpoint here: initializers are lazy (see ir.py).
"""
from __future__ import annotations

from onnx import TensorProto

from gptoss_edge.compiler import opset
from gptoss_edge.compiler.graph import rope
from gptoss_edge.compiler.graph.attention import build_attention
from gptoss_edge.compiler.graph.embedding import build_embedding
from gptoss_edge.compiler.graph.ir import Graph, lazy
from gptoss_edge.compiler.graph.lm_head import build_lm_head
from gptoss_edge.compiler.graph.moe import build_moe
from gptoss_edge.compiler.graph.norm import build_rmsnorm
from gptoss_edge.compiler.graph.ops import WeightSource

IO = opset.ENGINE_IO


def rope_tables(g: Graph, cfg, positions: int) -> tuple[str, str]:
    half = cfg.head_dim // 2
    cos = g.add_initializer(lazy("/rope/cos", "float32", [positions, half],
                                 lambda: [rope.cos_sin(cfg, positions)[0]], source="YaRN"))
    sin = g.add_initializer(lazy("/rope/sin", "float32", [positions, half],
                                 lambda: [rope.cos_sin(cfg, positions)[1]], source="YaRN"))
    return cos, sin


def build_layer(g: Graph, ckpt: WeightSource, layer: int, x: str, past_len: str, new_len: str,
                cos: str, sin: str) -> str:
    name = f"/layers.{layer}"
    key = f"model.layers.{layer}"
    h = build_rmsnorm(g, ckpt, f"{key}.input_layernorm.weight", x, f"{name}/attn_norm")
    x = g.op("Add", [x, build_attention(g, ckpt, layer, h, past_len, new_len, cos, sin)], f"{name}/attn_residual")
    h = build_rmsnorm(g, ckpt, f"{key}.post_attention_layernorm.weight", x, f"{name}/moe_norm")
    return g.op("Add", [x, build_moe(g, ckpt, layer, h, new_len)], f"{name}/moe_residual")


def build_model(ckpt: WeightSource, max_positions: int | None = None) -> Graph:
    """Canonical graph of `ckpt` (a WeightSource). max_positions: rows of the RoPE tables
    (default: the config's max_position_embeddings)."""
    cfg = ckpt.config
    g = Graph("gpt_oss", opsets={"": 21, opset.DOMAIN: opset.OPSET_VERSION})
    ids = g.add_input(IO.INPUT_IDS, TensorProto.INT64, ["batch", "seq"])
    past_len = g.add_input(IO.PAST_LEN, TensorProto.INT32, ["batch"])
    new_len = g.add_input(IO.NEW_LEN, TensorProto.INT32, ["batch"])
    logits_index = g.add_input(IO.LOGITS_INDEX, TensorProto.INT64, ["batch", "logits_rows"])
    g.add_output(IO.LOGITS, TensorProto.FLOAT, ["batch", "logits_rows", cfg.vocab_size])
    cos, sin = rope_tables(g, cfg, max_positions or cfg.max_position_embeddings)
    x = build_embedding(g, ckpt, ids)
    for layer in range(cfg.num_hidden_layers):
        x = build_layer(g, ckpt, layer, x, past_len, new_len, cos, sin)
    build_lm_head(g, ckpt, x, logits_index, IO.LOGITS)
    return g
