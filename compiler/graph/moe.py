"""MoE block (after its norm): one MoeMxfp4 node (our op) on the checkpoint's MXFP4 bytes as they
are (layout of compiler/opset.py MOE_MXFP4 == the checkpoint's), router in float32. The step's
new_len goes in too, so a kernel routes only the real tokens of right-padded batch rows."""
from __future__ import annotations

import numpy as np

from gptoss_edge.compiler import opset
from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.ops import WeightSource, our_node, weight


def expert_weights(g: Graph, ckpt: WeightSource, layer: int, name: str) -> dict[str, str]:
    """The MoeMxfp4 weight ports of one layer as lazily read initializers (one expert per chunk)."""
    cfg = ckpt.config
    E, H, I = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    key = f"model.layers.{layer}.mlp"
    shapes = {
        "gate_up_blocks": ([E, 2 * I, H // 32, 16], np.uint8), "gate_up_scales": ([E, 2 * I, H // 32], np.uint8),
        "gate_up_bias": ([E, 2 * I], np.float32),
        "down_blocks": ([E, H, I // 32, 16], np.uint8), "down_scales": ([E, H, I // 32], np.uint8),
        "down_bias": ([E, H], np.float32),
    }
    ports = {}
    for port, (shape, dtype) in shapes.items():
        proj, part = port.rsplit("_", 1)                     # gate_up_blocks -> gate_up, blocks
        ports[port] = weight(g, ckpt, f"{key}.experts.{proj}_proj_{part}", f"{name}/{port}",
                             shape, dtype, per_row=True)
    ports["router_weight"] = weight(g, ckpt, f"{key}.router.weight", f"{name}/router_weight", [E, H])
    ports["router_bias"] = weight(g, ckpt, f"{key}.router.bias", f"{name}/router_bias", [E])
    return ports


def build_moe(g: Graph, ckpt: WeightSource, layer: int, h: str, new_len: str) -> str:
    """h: normed hidden [batch, seq, hidden], new_len int32 [batch] -> expert mixture output,
    same shape (zeros on padded rows)."""
    cfg = ckpt.config
    name = f"/layers.{layer}/moe"
    ports = expert_weights(g, ckpt, layer, name)
    flat = g.op("Reshape", [h, g.const(f"{name}/flat_shape", [-1, cfg.hidden_size], np.int64)], f"{name}/flatten")
    ports["hidden"] = flat                               # [batch*seq, hidden]: token b*seq + s
    ports["new_len"] = new_len
    y = our_node(g, opset.MOE_MXFP4, f"{name}/experts", ports, outputs=[f"{name}/experts"],
                 num_experts=cfg.num_local_experts, top_k=cfg.num_experts_per_tok,
                 hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                 swiglu_limit=float(cfg.swiglu_limit))[0]
    return g.op("Reshape", [y, g.op("Shape", [h], f"{name}/in_shape")], f"{name}/unflatten")
