"""Graph -> ONNX: the model proto, with weights either embedded (tiny graphs, tests) or
streamed to one external data file tensor by tensor.

Peak memory while writing: the largest chunk one initializer yields (builders yield per-expert
or per-row-block chunks), never a whole layer.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from gptoss_edge.compiler.graph.ir import Graph, Initializer

ALIGN = 4096   # external tensors start on a page boundary so ONNX Runtime can mmap them
HUGE_ALIGN = 2 << 20   # ... and those of at least 2 MiB on a 2 MiB boundary: ONNX Runtime maps
                       # each tensor on its own, and only a mapping whose file offset is 2 MiB
                       # aligned can use the page cache's 2 MiB folios (FilePmdMapped): fewer TLB
                       # misses while a decode step streams the weights. The gap is a hole (sparse).
INLINE_MAX = 1024   # smaller initializers (axes, shapes, scalars) stay inside the model proto:
                    # shape inference must read them

Progress = Callable[[str, int], None]   # (initializer name, bytes written) after each tensor


def elem_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value_info(v) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, v.elem_type, list(v.shape))


def _tensor_header(init: Initializer) -> TensorProto:
    t = TensorProto()
    t.name = init.name
    t.data_type = elem_type(init.dtype)
    t.dims.extend(init.shape)
    return t


def model_proto(graph: Graph, initializers: list[TensorProto]) -> onnx.ModelProto:
    g = helper.make_graph(graph.nodes, graph.name, [_value_info(v) for v in graph.inputs],
                          [_value_info(v) for v in graph.outputs], initializer=initializers)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in graph.opsets.items()],
                          producer_name="gptoss-edge")
    m.ir_version = 10
    for k, v in graph.metadata.items():
        m.metadata_props.add(key=k, value=v)
    return m


def to_model_embedded(graph: Graph) -> onnx.ModelProto:
    """The whole model in memory (weights inline). Only for small graphs (< 2 GB)."""
    tensors = []
    for init in graph.initializers.values():
        t = _tensor_header(init)
        t.raw_data = init.array().tobytes()
        tensors.append(t)
    return model_proto(graph, tensors)


def save(graph: Graph, model_path: str | Path, data_name: str | None = None,
         progress: Progress | None = None) -> tuple[Path, Path]:
    """Write `model_path` and its external data file `data_name` (default: <model>.data) beside
    it, streaming each initializer chunk by chunk. Returns (model file, data file)."""
    model_path = Path(model_path)
    data_path = model_path.with_name(data_name or model_path.name + ".data")
    tensors: list[TensorProto] = []
    with open(data_path, "wb") as f:
        for init in graph.initializers.values():
            if init.nbytes <= INLINE_MAX:
                t = _tensor_header(init)
                t.raw_data = init.array().tobytes()
                tensors.append(t)
                if progress:
                    progress(init.name, init.nbytes)
                continue
            offset = _pad_to(f, HUGE_ALIGN if init.nbytes >= HUGE_ALIGN else ALIGN)
            written = 0
            for chunk in init.chunks():
                b = memoryview(chunk.reshape(-1).view(np.uint8))
                f.write(b)
                written += b.nbytes
            if written != init.nbytes:
                raise ValueError(f"initializer {init.name}: wrote {written} bytes, expected {init.nbytes}")
            t = _tensor_header(init)
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_path.name), ("offset", str(offset)), ("length", str(written))):
                e = t.external_data.add()
                e.key, e.value = k, v
            tensors.append(t)
            if progress:
                progress(init.name, written)
        f.flush()
        os.fsync(f.fileno())
    onnx.save_model(model_proto(graph, tensors), str(model_path))
    return model_path, data_path


def _pad_to(f, align: int) -> int:
    """Move to the next multiple of `align`, leaving a hole (reads as zeros, takes no blocks)."""
    pos = f.tell()
    return f.seek(pos + (-pos) % align)


def onnx_dtype_name(elem_type: int) -> str:
    """TensorProto enum -> the op set's dtype names ("float32", "int64", ...)."""
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))


def bindings(g: Graph) -> dict[str, Any]:
    """The graph's inputs and outputs as the manifest records them: name, dtype, symbolic shape."""
    def vi(v):
        return {"name": v.name, "dtype": onnx_dtype_name(v.elem_type), "shape": list(v.shape)}
    return {"inputs": [vi(v) for v in g.inputs], "outputs": [vi(v) for v in g.outputs]}
