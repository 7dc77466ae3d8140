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
    `get(key, rows=(start, stop))` returns float32 for float tensors and raw uint8 for MXFP4
    blocks/scales (rows: only that slice of axis 0), keyed by the canonical HF tensor names."""
    config: ModelConfig

    def get(self, key: str, rows: tuple[int, int] | None = None) -> np.ndarray: ...


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


CHUNK_BYTES = 256 << 20   # float32 bytes per chunk when streaming big tensors


def weight(g: Graph, ckpt: WeightSource, key: str, name: str, shape: Sequence[int],
           dtype=np.float32, per_row: bool = False, transpose: bool = False) -> str:
    """Checkpoint tensor `key` (expected `shape` [checkpoint layout] and `dtype`) as a lazily
    read initializer named `name` (hierarchical). Nothing is read until the writer streams it,
    and then in chunks of at most CHUNK_BYTES (or one row, with per_row: one expert per chunk),
    so the largest 20b tensor (lm_head, 2.3 GB in float32) is never whole in memory.
    transpose: store the 2-D tensor transposed ([out, in] -> [in, out] for MatMul)."""
    shape = tuple(int(s) for s in shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows_per_chunk = 1 if per_row else max(1, CHUNK_BYTES // max(row_bytes, 1))

    def read(start: int, stop: int) -> np.ndarray:
        a = ckpt.get(key, rows=(start, stop))
        want = (stop - start,) + shape[1:]
        if tuple(a.shape) != want or a.dtype != np.dtype(dtype):
            raise ValueError(f"checkpoint tensor {key}: expected {np.dtype(dtype)} {list(shape)}, got "
                             f"{a.dtype} {list(a.shape)} for rows {start}:{stop}")
        return a

    def produce():
        for start in range(0, shape[0], rows_per_chunk):
            yield read(start, min(start + rows_per_chunk, shape[0]))

    def produce_transposed():
        n_out, n_in = shape                     # W [out, in] -> W^T [in, out], column blocks
        cols = max(1, CHUNK_BYTES // (n_out * 4))
        for c0 in range(0, n_in, cols):
            c1 = min(c0 + cols, n_in)
            block = np.empty((c1 - c0, n_out), np.float32)
            for r0 in range(0, n_out, rows_per_chunk):
                r1 = min(r0 + rows_per_chunk, n_out)
                block[:, r0:r1] = read(r0, r1)[:, c0:c1].T
            yield block

    if transpose and len(shape) != 2:
        raise ValueError(f"{key}: only 2-D tensors can be stored transposed")
    if transpose:
        return g.add_initializer(lazy(name, dtype, shape[::-1], produce_transposed, source=key, untransposed=produce))
    return g.add_initializer(lazy(name, dtype, shape, produce, source=key))


def init_of(g: Graph, name: str) -> Initializer:
    try:
        return g.initializers[name]
    except KeyError:
        raise KeyError(f"{name!r} is not an initializer of graph {g.name}") from None
