"""Emit nodes of our op set (compiler/opset.py is the single source of names, port order and
attributes) and the weight-source protocol every builder reads from."""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from gptoss_edge.compiler import opset
from gptoss_edge.compiler.config import ModelConfig
from gptoss_edge.compiler.graph.ir import Graph, Initializer, lazy


class WeightSource(Protocol):
    """What builders need from a checkpoint (compiler.checkpoint.Checkpoint satisfies it):
    `get(key)` returns float32 for float tensors and raw uint8 for MXFP4 blocks/scales,
    keyed by the canonical Hugging Face tensor names."""
    config: ModelConfig

    def get(self, key: str) -> np.ndarray: ...


def our_node(g: Graph, s: opset.OpSpec, name: str, ports: Mapping[str, str],
             outputs: Sequence[str] | None = None, **attrs) -> list[str]:
    """Add one node of our op set; `ports` maps the spec's input names to value names (missing
    optional ports become empty inputs). Attributes are validated against the spec."""
    unknown = set(ports) - {p.name for p in s.inputs}
    if unknown:
        raise ValueError(f"{s.op_type}: unknown input port(s) {sorted(unknown)}")
    inputs = []
    for p in s.inputs:
        if p.name not in ports and not p.optional:
            raise ValueError(f"{s.op_type} {name}: input {p.name!r} is required")
        inputs.append(ports.get(p.name, ""))
    while inputs and inputs[-1] == "":
        inputs.pop()
    outs = list(outputs) if outputs else [f"{name}/{p.name}" for p in s.outputs]
    return g.node(s.op_type, inputs, name, outputs=outs, domain=opset.DOMAIN,
                  **opset.validate_attrs(s, attrs))


def weight(g: Graph, ckpt: WeightSource, key: str, name: str, shape: Sequence[int],
           dtype=np.float32, per_row: bool = False, transpose: bool = False) -> str:
    """Checkpoint tensor `key` (expected `shape` [checkpoint layout] and `dtype`) as a lazily
    read initializer named `name` (hierarchical). Nothing is read until the writer streams it.
    per_row: yield one slice along axis 0 at a time (expert tensors: one expert per chunk);
    transpose: store the 2-D tensor transposed ([out, in] -> [in, out] for MatMul)."""
    shape = tuple(int(s) for s in shape)
    out_shape = shape[::-1] if transpose else shape

    def produce():
        a = ckpt.get(key)
        if tuple(a.shape) != shape or a.dtype != np.dtype(dtype):
            raise ValueError(f"checkpoint tensor {key}: expected {np.dtype(dtype)} {list(shape)}, "
                             f"got {a.dtype} {list(a.shape)}")
        if transpose:
            a = a.T
            yield from (a[i:i + 256] for i in range(0, a.shape[0], 256))
        elif per_row:
            yield from (a[i:i + 1] for i in range(a.shape[0]))
        else:
            yield a
    return g.add_initializer(lazy(name, dtype, out_shape, produce, source=key))


def init_of(g: Graph, name: str) -> Initializer:
    try:
        return g.initializers[name]
    except KeyError:
        raise KeyError(f"{name!r} is not an initializer of graph {g.name}") from None
