"""Lower the canonical graph (our op set) to ONNX Runtime: our ops where our CPU kernels run them,
ONNX Runtime contrib ops (com.microsoft) elsewhere. Formats come from compiler/formats.py.

  SinkAttention -> kept for full-attention layers (window 0) when the engine uses our CPU kernel
                   library anyway (mxfp4 experts, 8-bit / 4-bit dense) unless attention="gqa":
                   our kernel reads the KV cache ~2.3x faster than GroupQueryAttention's ~9 GB/s
                   (24-layer decode at 4k context: 23.6 -> 10.1 ms of attention per step);
                   otherwise, and for sliding layers,
                -> GroupQueryAttention: RoPE from our cos/sin tables (do_rotary, half split),
                   sinks as head_sink, local_window_size = window (ORT attends to the current
                   token and window-1 previous ones: gpt-oss's q-k < window), right-padded rows
                   through query_seqlens = new_len, seqlens_k = past_len + new_len - 1.
                   KV cache: full layers hold the whole context (`kv_capacity`); sliding layers
                   keep the canonical window-sized buffer with sliding_window_cache=1 (ORT keeps
                   the most recent positions compacted at row 0 and evicts itself). Past and
                   present may be bound to the same buffer (in place).
  MoeMxfp4      -> kept (experts "mxfp4": our CPU kernel reads the checkpoint's MXFP4 blocks; the
                   same node the TensorRT target runs), or router MatMul + Add (float32) ->
                   MoE (experts "float", dequantized, exact) or QMoE (experts "int8": block 32,
                   lossless weights, activations always quantized to int8 by ORT's CPU kernel;
                   "int4": block 32, lossy weights, float32 or int8 activations), gpt-oss SwiGLU
                   (interleaved gate/linear rows, limit, alpha 1.702, beta 1), softmax over the
                   top-k selected logits (normalize_routing_weights=1). ORT's MoE/QMoE have
                   no new_len: they route padded rows like real ones (wasted work, never read:
                   attention skips padded rows and logits_index never picks them); our kernel
                   skips them.
  MatMul(x, W^T initializer) [+ Add(bias)] -> Gemm8bit (dense "8bit": int8 blocks of 32, as
                   llama.cpp's q8_0) or Gemm4bit (dense "4bit": MXFP4 or int4 blocks of 32),
                   compiler/dense4bit.py, our CPU kernels; or left as is (dense "float").
  Gather(embedding table)  -> Gather on a bfloat16 table + Cast to float32 (embedding "bf16":
                   exact for a checkpoint that stores it in bf16, as released; half the bytes).
Expert weights are converted expert by expert (a 20b layer's dequantized gate_up is 2 GB of
float32: never materialized); see ORT_NOTES.md for the measured kernel behaviour.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from gptoss_edge.compiler import dense4bit, formats, opset
from gptoss_edge.compiler.graph.ir import Graph, consumers as graph_consumers, lazy
from gptoss_edge.compiler.graph.ops import init_of
from gptoss_edge.compiler import expert_formats as fmt

MS = "com.microsoft"
EXPERT_MODES = tuple(formats.EXPERTS)
DENSE_MODES = formats.DENSE_MODES
EMBEDDING_MODES = ("float", "bf16")
ATTENTION_MODES = ("auto", "gqa")   # full-attention layers: ours where the library is loaded, or ORT's
# Activations of the quantized GEMMs (our kernels, QMoE): "float" keeps them float32 (exact on
# the stored weights), "int8" quantizes them per block of 32 (our kernels: session config of the
# custom-op library; QMoE: accuracy_level 4), faster, ~1% error per GEMM.
ACTIVATION_MODES = formats.ACTIVATIONS
IO = opset.ENGINE_IO
LEN = "/lengths"


def lower(g: Graph, experts: str = "float", dense: str = "float", embedding: str = "float",
          activations: str = "float", dense_format: str = "mxfp4", weights=None,
          attention: str = "auto") -> Graph:
    """A new graph for ONNX Runtime; `g` is left unchanged. Initializers stay lazy. `weights`
    (the checkpoint) lets 4-bit dense layers read W row groups directly. `attention`: "auto"
    (full-attention layers on our kernel when the engine loads our library anyway) or "gqa"
    (every layer on GroupQueryAttention)."""
    ef, df = formats.expert(experts), formats.dense(dense, dense_format)
    formats.check_activations(ef, activations, "--experts")
    formats.check_activations(df, activations, "--dense")
    accuracy = 4 if activations == "int8" else 0
    if embedding not in EMBEDDING_MODES:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDING_MODES)}, got {embedding!r}")
    if attention not in ATTENTION_MODES:
        raise ValueError(f"--attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    out = Graph(g.name, opsets={"": g.opsets.get("", 21), MS: 1, opset.DOMAIN: opset.OPSET_VERSION})
    out.metadata = dict(g.metadata)
    out.inputs = list(g.inputs)        # cache shapes stay canonical (window / kv_capacity)
    out.outputs = list(g.outputs)
    consumers = graph_consumers(g)
    our_attention = attention == "auto" and (ef.custom_ops or df.custom_ops)
    if any(n.domain == opset.DOMAIN and n.op_type == opset.SINK_ATTENTION.op_type for n in g.nodes):
        _length_nodes(out)
    skip: set[str] = set()
    for n in g.nodes:
        if n.name in skip:
            continue
        if n.domain == opset.DOMAIN and n.op_type == opset.SINK_ATTENTION.op_type:
            if our_attention and _window(n) == 0:
                out.nodes.append(n)           # our CPU kernel (cpu_kernels/attention.cpp)
            else:
                _lower_attention(out, n)
        elif n.domain == opset.DOMAIN and n.op_type == opset.MOE_MXFP4.op_type:
            if ef.ort_op == opset.MOE_MXFP4.op_type:
                out.nodes.append(n)           # our CPU kernel runs the canonical node
            else:
                _lower_moe(out, g, n, experts, accuracy)
        elif n.domain == opset.DOMAIN:
            raise ValueError(f"node {n.name}: no ONNX Runtime lowering for {n.op_type}")
        elif embedding == "bf16" and _is_embedding(g, n):
            _lower_embedding_bf16(out, g, n)
        elif dense in ("4bit", "8bit") and dense4bit.is_dense(g, n):
            skip |= _lower_dense(out, g, n, consumers, "q8" if dense == "8bit" else dense_format, weights)
        else:
            out.nodes.append(n)
    _keep_used_initializers(out, g)
    if not any(n.domain == opset.DOMAIN for n in out.nodes):
        del out.opsets[opset.DOMAIN]
    return out


# ---- graph plumbing ----------------------------------------------------------------------------
def _keep_used_initializers(out: Graph, g: Graph) -> None:
    used = {i for n in out.nodes for i in n.input}
    for name, init in g.initializers.items():
        if name in used and name not in out.initializers:
            out.add_initializer(init)
    unused = [k for k in out.initializers if k not in used]
    for k in unused:
        del out.initializers[k]


def _length_nodes(out: Graph) -> None:
    """seqlens_k = past_len + new_len - 1 (per row); total = max over rows of past_len + new_len."""
    total = out.op("Add", [IO.PAST_LEN, IO.NEW_LEN], f"{LEN}/total")
    out.op("Sub", [total, out.const(f"{LEN}/one", 1, np.int32)], f"{LEN}/seqlens_k")
    out.op("ReduceMax", [total], f"{LEN}/max_total", keepdims=0)


# ---- attention ---------------------------------------------------------------------------------
def _window(n: onnx.NodeProto) -> int:
    return next((int(onnx.helper.get_attribute_value(a)) for a in n.attribute if a.name == "window"), 0)


def _lower_attention(out: Graph, n: onnx.NodeProto) -> None:
    s = opset.SINK_ATTENTION
    port = {p.name: n.input[i] if i < len(n.input) else "" for i, p in enumerate(s.inputs)}
    a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
    window = int(a.get("window", 0))
    gqa_inputs = [port["query"], port["key"], port["value"], port["past_key"], port["past_value"],
                  f"{LEN}/seqlens_k", f"{LEN}/max_total", port["rope_cos"], port["rope_sin"],
                  "", "", port["sinks"], "", "", "", "", port["new_len"]]
    # position_ids, attention_bias unused; head_sink; k_scale, v_scale, q/k norm unused; query_seqlens
    out.node("GroupQueryAttention", gqa_inputs, n.name, outputs=list(n.output), domain=MS,
             num_heads=int(a["num_heads"]), kv_num_heads=int(a["num_kv_heads"]), scale=float(a["scale"]),
             do_rotary=1, rotary_interleaved=0, local_window_size=window if window > 0 else -1,
             sliding_window_cache=1 if window > 0 else None)


# ---- MoE ---------------------------------------------------------------------------------------
def _lower_moe(out: Graph, g: Graph, n: onnx.NodeProto, experts: str, accuracy: int) -> None:
    s = opset.MOE_MXFP4
    port = {p.name: name for p, name in zip(s.inputs, n.input)}
    a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
    a = opset.validate_attrs(s, a)
    name = n.name
    rw = init_of(g, port["router_weight"])
    rw_t = out.add_initializer(lazy(f"{rw.name}_T", np.float32, rw.shape[::-1],
                                    lambda rw=rw: [rw.array().T], source=rw.source))
    logits = out.op("Add", [out.op("MatMul", [port["hidden"], rw_t], f"{name}/router/matmul"),
                           port["router_bias"]], f"{name}/router")
    blocks = {p: init_of(g, port[f"{p}_blocks"]) for p in ("gate_up", "down")}
    scales = {p: init_of(g, port[f"{p}_scales"]) for p in ("gate_up", "down")}
    common = dict(k=a["top_k"], activation_type="swiglu", swiglu_fusion=1,
                  swiglu_limit=a["swiglu_limit"], activation_alpha=a["swiglu_alpha"],
                  activation_beta=a["swiglu_linear_offset"], normalize_routing_weights=1)
    w = {}
    if experts == "float":
        for p in ("gate_up", "down"):
            w[p] = out.add_initializer(fmt.float_experts(f"{name}/{p}_weight", blocks[p], scales[p]))
        out.node("MoE", [port["hidden"], logits, w["gate_up"], port["gate_up_bias"], w["down"],
                         port["down_bias"]], name, outputs=list(n.output), domain=MS, **common)
        return
    bits = 8 if experts == "int8" else 4
    sc = {}
    for p in ("gate_up", "down"):
        q, qs = fmt.int_experts(f"{name}/{p}", blocks[p], scales[p], bits)
        w[p], sc[p] = out.add_initializer(q), out.add_initializer(qs)
    out.node("QMoE", [port["hidden"], logits, w["gate_up"], sc["gate_up"], port["gate_up_bias"],
                      w["down"], sc["down"], port["down_bias"]], name, outputs=list(n.output),
             domain=MS, expert_weight_bits=bits, block_size=32, quant_type="int", accuracy_level=accuracy,
             **common)


# ---- dense 8-bit / 4-bit -----------------------------------------------------------------------
def _lower_dense(out: Graph, g: Graph, n: onnx.NodeProto, consumers, dense_format: str, weights) -> set[str]:
    """MatMul(x, W^T) [+ Add(b)] -> our Gemm8bit (format q8) or Gemm4bit; returns the names of
    the nodes it absorbed."""
    spec = opset.GEMM_8BIT if dense_format == "q8" else opset.GEMM_4BIT
    p = dense4bit.dense_gemm_parts(g, n, consumers, dense_format, weights)
    inputs = [p.x, out.add_initializer(p.blocks), out.add_initializer(p.scales)] + ([p.bias] if p.bias else [])
    out.node(spec.op_type, inputs, p.name, outputs=[p.output], domain=opset.DOMAIN,
             **opset.validate_attrs(spec, p.attrs))
    return p.absorbed


# ---- bf16 embedding table ----------------------------------------------------------------------
def _is_embedding(g: Graph, n: onnx.NodeProto) -> bool:
    return (n.op_type == "Gather" and n.input[0] in g.initializers
            and g.initializers[n.input[0]].dtype == np.float32 and len(g.initializers[n.input[0]].shape) == 2)


def _lower_embedding_bf16(out: Graph, g: Graph, n: onnx.NodeProto) -> None:
    table = out.add_initializer(fmt.bf16_table(f"{n.input[0]}_bf16", g.initializers[n.input[0]]))
    rows = out.node("Gather", [table, n.input[1]], n.name, outputs=[f"{n.name}/bf16"], axis=0)[0]
    out.node("Cast", [rows], f"{n.name}/to_float", outputs=list(n.output), to=TensorProto.FLOAT)
