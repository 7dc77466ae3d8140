"""RMSNorm from standard ONNX ops (any target runs it; ONNX Runtime fuses the pattern):
y = x / sqrt(mean(x^2, last axis) + eps) * weight, in float32 like both references."""
from __future__ import annotations

import numpy as np

from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.ops import WeightSource, weight


def build_rmsnorm(g: Graph, ckpt: WeightSource, key: str, x: str, name: str) -> str:
    cfg = ckpt.config
    w = weight(g, ckpt, key, f"{name}/weight", [cfg.hidden_size])
    sq = g.op("Mul", [x, x], f"{name}/square")
    mean = g.op("ReduceMean", [sq, g.const(f"{name}/axes", [-1], np.int64)], f"{name}/mean", keepdims=1)
    var = g.op("Add", [mean, g.const(f"{name}/eps", cfg.rms_norm_eps)], f"{name}/add_eps")
    inv = g.op("Reciprocal", [g.op("Sqrt", [var], f"{name}/sqrt")], f"{name}/rsqrt")
    return g.op("Mul", [g.op("Mul", [x, inv], f"{name}/normalize"), w], f"{name}/scale")
