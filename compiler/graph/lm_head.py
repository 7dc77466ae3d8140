"""Final RMSNorm and the untied lm_head (no bias) -> logits [batch, seq, vocab] float32."""
from __future__ import annotations

from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.linear import build_linear
from gptoss_edge.compiler.graph.norm import build_rmsnorm
from gptoss_edge.compiler.graph.ops import WeightSource


def build_lm_head(g: Graph, ckpt: WeightSource, x: str, logits_name: str) -> str:
    cfg = ckpt.config
    h = build_rmsnorm(g, ckpt, "model.norm.weight", x, "/final_norm")
    y = build_linear(g, ckpt, "lm_head", h, "/lm_head", cfg.hidden_size, cfg.vocab_size, bias=False)
    return g.node("Identity", [y], "/lm_head/output", outputs=[logits_name])[0]
