"""Lower the canonical graph (our op set) to the TensorRT target graph.

  * Our ops stay and become plugin nodes: TensorRT's ONNX parser looks a node it does not know up
    as an IPluginV3 creator named op_type with the string attributes `plugin_version` and
    `plugin_namespace` (opset.PLUGIN_ATTRS), which this pass sets from the op set.
  * Packed 4-bit bytes (MXFP4 blocks, E8M0 scales) become int8 initializers with the same bits:
    the parser widens uint8 initializers to int32 (4x the memory); int8 stays native.
  * --dense 4bit: MatMul(x, W^T) [+ Add(bias)] (q/k/v/o, lm_head) -> Gemm4bit with MXFP4 or int4
    blocks of 32 (compiler/dense4bit.py).
  * --precision fp16|bf16: blocks compute in that type, the residual stream, the RMSNorms and the
    logits stay float32. A node is in a low-precision block when its hierarchical name is under
    LOW_PRECISION_SCOPES (attention and MoE blocks, embedding, lm_head); float tensors entering a
    block are cast down once, tensors leaving it are cast back up, float32 initializers read by a
    block are stored in the low type (the embedding and dense weights shrink by half), except the
    ports the op set types float32 (router, expert biases, sinks, RoPE tables). The KV cache
    bindings take the low type. Expert weights stay MXFP4 in every mode.
  * KV cache: window layers keep the canonical `window`-slot ring, full layers a `kv_capacity`
    slot cache; `profiles()` gives the optimization-profile ranges recorded in the manifest.
"""
from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper

from gptoss_edge.compiler import dense4bit, opset, schemas
from gptoss_edge.compiler.config import ModelConfig
from gptoss_edge.compiler.graph import onnx_io
from gptoss_edge.compiler.graph.ir import Graph, Initializer, ValueInfo, lazy
from gptoss_edge.compiler.graph.ir import consumers as graph_consumers

IO = opset.ENGINE_IO
PRECISIONS = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
DENSE_MODES = ("16bit", "4bit")
LOW_PRECISION_SCOPES = re.compile(r"^/(layers\.\d+/(attn|moe)|embed|lm_head)/")
_OURS = {s.op_type: s for s in opset.OPS}


class LoweringError(ValueError):
    """A canonical graph or option the TensorRT lowering cannot handle; names the node/option."""


def lower(g: Graph, *, precision: str = "fp16", dense: str = "16bit", dense_format: str = "mxfp4",
          weights=None) -> Graph:
    """A new graph for TensorRT; `g` is left unchanged. Initializers stay lazy. `weights` (the
    checkpoint, a WeightSource) lets 4-bit dense layers read W [out, in] row groups directly (no
    whole float32 lm_head in memory)."""
    if precision not in PRECISIONS:
        raise LoweringError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if dense not in DENSE_MODES:
        raise LoweringError(f"--dense must be one of {', '.join(DENSE_MODES)} on tensorrt, got {dense!r}"
                            + (" (8bit is the onnxruntime target's Gemm8bit)" if dense == "8bit" else ""))
    if dense_format not in dense4bit.FORMATS:
        raise LoweringError(f"--dense-format must be one of {', '.join(dense4bit.FORMATS)}, got {dense_format!r}")
    out = Graph(g.name, opsets=dict(g.opsets))
    out.metadata = dict(g.metadata)
    out.inputs, out.outputs = list(g.inputs), list(g.outputs)
    out.initializers = dict(g.initializers)
    consumers = graph_consumers(g)
    absorbed: set[str] = set()
    for n in g.nodes:
        if n.name in absorbed:
            continue
        if n.domain == opset.DOMAIN:
            out.nodes.append(_plugin_node(out, n))
        elif dense == "4bit" and dense4bit.is_dense(g, n):
            absorbed |= _lower_dense(out, g, n, consumers, dense_format, weights)
        else:
            out.nodes.append(n)
    if precision != "fp32":
        out = _to_low_precision(out, PRECISIONS[precision], precision)
    _drop_unused_initializers(out)
    out.metadata.update({"gptoss_edge.target": "tensorrt", "gptoss_edge.precision": precision,
                         "gptoss_edge.dense": dense if dense == "16bit" else f"4bit-{dense_format}"})
    return out


# ---- plugin nodes ----------------------------------------------------------------------------

def _plugin_node(out: Graph, n: onnx.NodeProto) -> onnx.NodeProto:
    """Our node + TensorRT's plugin lookup attributes; its BYTES inputs re-typed as int8."""
    s = _OURS.get(n.op_type)
    if s is None:
        raise LoweringError(f"node {n.name}: {n.op_type!r} is not in the {opset.DOMAIN} op set")
    m = onnx.NodeProto()
    m.CopyFrom(n)
    for name in opset.PLUGIN_ATTRS:
        for i, a in enumerate(m.attribute):
            if a.name == name:
                del m.attribute[i]
                break
    m.attribute.extend([helper.make_attribute("plugin_version", s.plugin_version),
                        helper.make_attribute("plugin_namespace", opset.PLUGIN_NAMESPACE)])
    for port, value in zip(s.inputs, m.input):
        if value in out.initializers and "int8" in port.dtype.split("|"):
            out.initializers[value] = _as_int8(out.initializers[value])
    return m


def _as_int8(init: Initializer) -> Initializer:
    if init.dtype == np.int8:
        return init
    if init.dtype != np.uint8:
        raise LoweringError(f"initializer {init.name}: packed bytes must be uint8, got {init.dtype}")
    return lazy(init.name, np.int8, init.shape, lambda: (c.view(np.int8) for c in init.chunks()),
                source=init.source)


def plugin_node(g: Graph, s: opset.OpSpec, name: str, inputs: list[str], outputs: list[str], **attrs) -> str:
    g.node(s.op_type, inputs, name, outputs=outputs, domain=opset.DOMAIN,
           plugin_version=s.plugin_version, plugin_namespace=opset.PLUGIN_NAMESPACE,
           **opset.validate_attrs(s, attrs))
    return outputs[0]


# ---- dense 4-bit -----------------------------------------------------------------------------

def _lower_dense(out: Graph, g: Graph, n: onnx.NodeProto, consumers, fmt: str, weights) -> set[str]:
    """MatMul(x, W^T) [+ Add(b)] -> Gemm4bit; returns the names of the nodes it absorbed."""
    p = dense4bit.dense_gemm_parts(g, n, consumers, fmt, weights)
    inputs = [p.x, out.add_initializer(_as_int8(p.blocks)),
              out.add_initializer(_as_int8(p.scales) if fmt == "mxfp4" else p.scales)]
    plugin_node(out, opset.GEMM_4BIT, p.name, inputs + ([p.bias] if p.bias else []), [p.output], **p.attrs)
    return p.absorbed


# ---- precision -------------------------------------------------------------------------------

def value_types(g: Graph) -> dict[str, int]:
    """Element type of every value (ONNX type inference with our schemas; no weight is read)."""
    schemas.register()
    headers = []
    for init in g.initializers.values():
        t = onnx_io._tensor_header(init)
        if init.nbytes <= onnx_io.INLINE_MAX and init.dtype in (np.int32, np.int64):
            t.raw_data = init.array().tobytes()       # shapes and axes: Reshape inference reads them
        headers.append(t)
    m = onnx.shape_inference.infer_shapes(onnx_io.model_proto(g, headers))
    types = {v.name: v.elem_type for v in g.inputs}
    types.update({name: onnx_io.elem_type(i.dtype) for name, i in g.initializers.items()})
    for vi in list(m.graph.value_info) + list(m.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _float32_ports(n: onnx.NodeProto) -> set[int]:
    s = _OURS.get(n.op_type) if n.domain == opset.DOMAIN else None
    return {i for i, p in enumerate(s.inputs) if p.dtype == "float32"} if s else set()


def _cast_init(init: Initializer, elem: int, suffix: str) -> Initializer:
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    return lazy(f"{init.name}/{suffix}", dtype, init.shape,
                lambda: (c.astype(dtype) for c in init.chunks()), source=init.source)


def _to_low_precision(g: Graph, low: int, suffix: str) -> Graph:
    types = value_types(g)
    is_float = lambda v: types.get(v) == TensorProto.FLOAT   # noqa: E731
    low_inits: dict[str, str] = {}
    produced_low: set[str] = set()          # float values now computed in the low type
    renamed: dict[str, str] = {}            # float graph outputs made in a block -> low-type name
    casts_down: dict[str, str] = {}
    out = Graph(g.name, opsets=dict(g.opsets))
    out.metadata, out.initializers = dict(g.metadata), dict(g.initializers)
    cache_io = {v.name for v in g.inputs + g.outputs if _is_cache_binding(v.name)}
    out.inputs = [_retype(v, low) if v.name in cache_io else v for v in g.inputs]
    out.outputs = [_retype(v, low) if v.name in cache_io else v for v in g.outputs]
    graph_outputs = {v.name for v in g.outputs}
    consumers = graph_consumers(g)
    for n in g.nodes:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        if not LOW_PRECISION_SCOPES.match(n.name):
            for i, v in enumerate(m.input):          # block outputs come back to float32
                if v in produced_low:
                    m.input[i] = f"{v}/to_fp32"
            out.nodes.append(m)
            continue
        keep = _float32_ports(n)
        for i, v in enumerate(m.input):
            if v in renamed:
                m.input[i] = renamed[v]
            elif i in keep or not v or not is_float(v) or v in produced_low or v in cache_io:
                continue
            if v in g.initializers:
                if v not in low_inits:
                    low_inits[v] = out.add_initializer(_cast_init(g.initializers[v], low, suffix))
                m.input[i] = low_inits[v]
            else:
                if v not in casts_down:
                    casts_down[v] = out.op("Cast", [v], f"{v}/to_{suffix}", to=low)
                m.input[i] = casts_down[v]
        out.nodes.append(m)
        for o, v in enumerate(n.output):
            if not is_float(v) or v in cache_io:
                continue
            if v in graph_outputs:              # e.g. logits: computed low, bound as float32
                renamed[v] = m.output[o] = f"{v}/{suffix}"
                out.node("Cast", [renamed[v]], f"{n.name}/to_fp32", outputs=[v], to=TensorProto.FLOAT)
                continue
            produced_low.add(v)
            if any(not LOW_PRECISION_SCOPES.match(c.name) for c in consumers.get(v, [])):
                out.op("Cast", [v], f"{v}/to_fp32", to=TensorProto.FLOAT)
    return out


def _is_cache_binding(name: str) -> bool:
    layer = name.rsplit(".", 1)[-1]
    return layer.isdigit() and name in (IO.past_key(int(layer)), IO.past_value(int(layer)),
                                        IO.present_key(int(layer)), IO.present_value(int(layer)))


def _retype(v: ValueInfo, elem: int) -> ValueInfo:
    return ValueInfo(v.name, elem, v.shape)


def _drop_unused_initializers(g: Graph) -> None:
    used = {i for n in g.nodes for i in n.input}
    for k in [k for k in g.initializers if k not in used]:
        del g.initializers[k]


# ---- optimization profiles ------------------------------------------------------

def profiles(cfg: ModelConfig, *, max_batch: int, max_context: int, opt_batch: int = 1,
             max_step_tokens: int = 512) -> dict[str, dict[str, list[int]]]:
    """Optimization-profile ranges, per symbolic dim: [min, opt, max]. `seq` is the tokens one
    step brings (1 = decode, up to max_step_tokens = a prefill chunk); `kv_capacity` the slots of
    full-attention layers (window layers: a fixed `window`-slot ring); `logits_rows` the positions
    of a step whose logits are computed (1 when sampling; up to a chunk when a caller asks for
    every position's logits)."""
    if not 1 <= opt_batch <= max_batch:
        raise LoweringError(f"--batch {opt_batch} outside [1, {max_batch}]")
    if max_context > cfg.max_position_embeddings:
        raise LoweringError(f"--max-context {max_context} exceeds the model's {cfg.max_position_embeddings}")
    return {"batch": [1, opt_batch, max_batch],
            "seq": [1, 1, min(max_step_tokens, max_context)],
            "logits_rows": [1, 1, min(max_step_tokens, max_context)],
            "kv_capacity": [1, max_context, max_context],
            "ring": [cfg.sliding_window] * 3}
