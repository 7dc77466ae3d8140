"""A small graph container for building ONNX graphs whose weights never all sit in memory.

Nodes are plain `onnx.NodeProto`s. Initializers are `Initializer`s: name, dtype, shape and a
`produce()` callable that yields the tensor's bytes as C-order chunks along axis 0 (so a writer
streams one chunk at a time: a whole 20b expert tensor is never materialized). Lowering passes
(`lower_ort`, the TensorRT target) rewrite a `Graph` into another `Graph` and may wrap old
initializers' `produce` in new ones (dequantize/repack expert by expert).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import helper

Chunks = Callable[[], Iterable[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Initializer:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    produce: Chunks
    source: str = ""      # where the data comes from (checkpoint key), for diagnostics
    # For a weight stored transposed (W^T [in, out] for MatMul): W [out, in] as row chunks, so
    # a lowering that wants rows of W (4-bit packing) streams them instead of transposing back.
    untransposed: Chunks | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def chunks(self) -> Iterator[np.ndarray]:
        """The data as C-order chunks along axis 0, each checked against the declared layout."""
        rows = 0
        for c in self.produce():
            c = np.ascontiguousarray(c, dtype=self.dtype)
            if c.shape[1:] != tuple(self.shape[1:]):
                raise ValueError(f"initializer {self.name}: chunk shape {c.shape} does not fit {self.shape}")
            rows += c.shape[0]
            yield c
        if rows != (self.shape[0] if self.shape else 1):
            raise ValueError(f"initializer {self.name}: produced {rows} rows, expected {self.shape}")

    def array(self) -> np.ndarray:
        """The whole tensor in memory (small tensors, tests)."""
        parts = list(self.chunks())
        if not self.shape:
            return parts[0].reshape(())
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


def from_array(name: str, a: np.ndarray, source: str = "") -> Initializer:
    a = np.asarray(a)
    shape = tuple(a.shape)
    return Initializer(name, a.dtype, shape, lambda: [a.reshape((1,) if not shape else shape)], source)


def lazy(name: str, dtype, shape: Sequence[int], produce: Chunks, source: str = "",
         untransposed: Chunks | None = None) -> Initializer:
    return Initializer(name, np.dtype(dtype), tuple(int(s) for s in shape), produce, source, untransposed)


@dataclasses.dataclass
class ValueInfo:
    name: str
    elem_type: int                    # onnx.TensorProto.FLOAT, ...
    shape: tuple[int | str, ...]      # ints or symbolic dim names


class Graph:
    """Nodes, graph inputs/outputs and lazily produced initializers."""

    def __init__(self, name: str, opsets: dict[str, int] | None = None):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[ValueInfo] = []
        self.outputs: list[ValueInfo] = []
        self.initializers: dict[str, Initializer] = {}
        self.opsets: dict[str, int] = dict(opsets or {"": 21})
        self.metadata: dict[str, str] = {}

    # ---- construction --------------------------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(ValueInfo(name, elem_type, tuple(shape)))
        return name

    def add_output(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.outputs.append(ValueInfo(name, elem_type, tuple(shape)))
        return name

    def add_initializer(self, init: Initializer) -> str:
        if init.name in self.initializers:
            raise ValueError(f"initializer {init.name!r} defined twice")
        self.initializers[init.name] = init
        return init.name

    def const(self, name: str, value, dtype=np.float32) -> str:
        """A small constant initializer (scalars, shapes, axes)."""
        return self.add_initializer(from_array(name, np.asarray(value, dtype=dtype)))

    def node(self, op_type: str, inputs: Sequence[str], name: str, *, outputs: int | Sequence[str] = 1,
             domain: str = "", **attrs) -> list[str]:
        """Add a node named `name` (hierarchical, e.g. /layers.3/moe/router). Output names default
        to `name` (one output) or `name:i`. Returns the output names."""
        if isinstance(outputs, int):
            outs = [name] if outputs == 1 else [f"{name}:{i}" for i in range(outputs)]
        else:
            outs = list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain or None,
                                           **{k: v for k, v in attrs.items() if v is not None}))
        return outs

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs) -> str:
        """Single-output standard op."""
        return self.node(op_type, inputs, name, **attrs)[0]

    # ---- inspection ----------------------------------------------------------------------
    def nodes_of(self, op_type: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type == op_type]

    def total_weight_bytes(self) -> int:
        return sum(i.nbytes for i in self.initializers.values())


def consumers(g: Graph) -> dict[str, list[onnx.NodeProto]]:
    """Value name -> the nodes of `g` that read it (in graph order)."""
    c: dict[str, list[onnx.NodeProto]] = {}
    for n in g.nodes:
        for i in n.input:
            c.setdefault(i, []).append(n)
    return c
