"""Token embedding: Gather rows of model.embed_tokens.weight [vocab, hidden]."""
from __future__ import annotations

from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.ops import WeightSource, weight


def build_embedding(g: Graph, ckpt: WeightSource, input_ids: str) -> str:
    cfg = ckpt.config
    table = weight(g, ckpt, "model.embed_tokens.weight", "/embed/weight", [cfg.vocab_size, cfg.hidden_size])
    return g.op("Gather", [table, input_ids], "/embed/gather", axis=0)
