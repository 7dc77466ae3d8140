"""Dense projection y = x @ W^T + b as MatMul (+ Add): the weight is stored transposed [in, out]
at compile time. Lowerings recognise MatMul-with-initializer (+ Add bias) and may replace it
(our Gemm4bit on both targets)."""
from __future__ import annotations

from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.ops import WeightSource, weight


def build_linear(g: Graph, ckpt: WeightSource, key: str, x: str, name: str, in_features: int,
                 out_features: int, bias: bool = True) -> str:
    """`key` is the checkpoint prefix (…q_proj): reads key.weight [out, in] and key.bias [out]."""
    w = weight(g, ckpt, f"{key}.weight", f"{name}/weight_T", [out_features, in_features], transpose=True)
    y = g.op("MatMul", [x, w], f"{name}/matmul")
    if not bias:
        return y
    b = weight(g, ckpt, f"{key}.bias", f"{name}/bias", [out_features])
    return g.op("Add", [y, b], f"{name}/add_bias")
