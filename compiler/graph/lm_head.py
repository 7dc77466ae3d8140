"""Final RMSNorm and the untied lm_head (no bias) on the chosen rows -> logits [batch, rows, vocab]
float32. Rows are chosen first (logits_index: the step positions whose logits are wanted), so a
sampling step normalises and projects one row per sequence, not every prompt position."""
from __future__ import annotations

import numpy as np

from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.linear import build_linear
from gptoss_edge.compiler.graph.norm import build_rmsnorm
from gptoss_edge.compiler.graph.ops import WeightSource


def select_rows(g: Graph, x: str, index: str) -> str:
    """x [batch, seq, hidden], index int64 [batch, rows] -> [batch, rows, hidden] = x[b, index[b, r]]."""
    idx = g.op("Unsqueeze", [index, g.const("/lm_head/rows/axes", [-1], np.int64)], "/lm_head/rows/index")
    return g.op("GatherND", [x, idx], "/lm_head/rows/select", batch_dims=1)


def build_lm_head(g: Graph, ckpt: WeightSource, x: str, logits_index: str, logits_name: str) -> str:
    cfg = ckpt.config
    h = build_rmsnorm(g, ckpt, "model.norm.weight", select_rows(g, x, logits_index), "/final_norm")
    y = build_linear(g, ckpt, "lm_head", h, "/lm_head", cfg.hidden_size, cfg.vocab_size, bias=False)
    return g.node("Identity", [y], "/lm_head/output", outputs=[logits_name])[0]
