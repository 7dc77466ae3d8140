"""The gptoss-edge op set: the ONE definition of our custom ops.

Every consumer takes names from here and nowhere else:
  * the ONNX emitter (graph builders make nodes with `make_node(SPEC, ...)`),
  * the numpy reference kernels (registered with onnx.reference by `op_type`),
  * the ONNX schemas (onnx.checker / shape inference),
  * the C++ plugin glue (a header generated from these specs; a test checks it is current),
  * the engine manifest (op-set version) and the engine binding names (ENGINE_IO below).

Dtype names are ONNX tensor-type names without the prefix ("float16", "bfloat16", "float32",
"uint8", "int32", "int64"). "T" in a port means: the activation type of the node, one of
ACTIVATION_TYPES, the same for every port typed "T" on that node. "a|b" means either type.
Packed 4-bit weights and E8M0 scales are raw bytes typed BYTES ("uint8|int8"): uint8 in the
canonical graph (as in the checkpoint), int8 with the SAME bits in the TensorRT graph, because
TensorRT's ONNX parser widens uint8 initializers to int32 (4x the memory) while int8 stays
native. Kernels reinterpret the bytes as uint8 either way.
Shapes use symbolic dims; see each op's docstring for the bit layouts.
"""
from __future__ import annotations

import dataclasses
from typing import Any

DOMAIN = "gptoss_edge"            # ONNX domain of our nodes
PLUGIN_NAMESPACE = "gptoss_edge"  # TensorRT plugin namespace
OPSET_VERSION = 3                 # ONNX opset version of DOMAIN; bump on any contract change
                                  # (2: Gemm8bit; 3: MoeMxfp4 new_len, padded rows skipped)
ACTIVATION_TYPES = ("float16", "bfloat16", "float32")
BYTES = "uint8|int8"              # dtype of packed-weight/scale ports (see module docstring)
# String attributes TensorRT's ONNX parser reads on a node it does not know, to find the
# IPluginV3 creator (name = op_type): plugin_version and plugin_namespace. The TensorRT lowering
# sets them from OpSpec.plugin_version / PLUGIN_NAMESPACE; every other consumer ignores them.
PLUGIN_ATTRS = ("plugin_version", "plugin_namespace")


@dataclasses.dataclass(frozen=True)
class Attr:
    name: str
    kind: str             # "int" | "float" | "string"
    default: Any = None   # None: required
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Port:
    name: str
    dtype: str            # "T" or a fixed dtype name
    shape: tuple[str, ...]
    doc: str = ""
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class OpSpec:
    op_type: str
    plugin_version: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    attrs: tuple[Attr, ...]
    doc: str
    targets: tuple[str, ...] = ("onnxruntime", "tensorrt")   # engines with a kernel for it

    def input_index(self, name: str) -> int:
        return [p.name for p in self.inputs].index(name)

    def output_index(self, name: str) -> int:
        return [p.name for p in self.outputs].index(name)

    def attr(self, name: str) -> Attr:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(f"{self.op_type} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
MOE_MXFP4 = OpSpec(
    op_type="MoeMxfp4",
    plugin_version="1",
    doc="""Sparse mixture of experts with MXFP4 expert weights (gpt-oss MLP block, after its norm).

router logits = hidden @ router_weight^T + router_bias   (computed in float32)
top_k experts per token by logit (ties: lower expert index first); routing weights =
softmax over the top_k selected logits only.
Per selected expert e:
  gu   = dequant(gate_up[e]) @ h + gate_up_bias[e]          # [2I], rows interleaved:
  g    = gu[0::2] (gate), l = gu[1::2] (linear)
  g    = min(g, swiglu_limit); l = clamp(l, -swiglu_limit, swiglu_limit)
  a    = g * sigmoid(swiglu_alpha * g) * (l + swiglu_linear_offset)   # [I]
  y_e  = dequant(down[e]) @ a + down_bias[e]                  # [H]
out = sum_e routing_weight_e * y_e   (bias added before the routing weight)

Padded rows (optional new_len, int32 [batch], the attention's port): hidden's tokens are then
batch rows of S = tokens / batch (tokens must be a multiple of batch); token t = b*S + s is padded
when s >= new_len[b]. Padded tokens are not routed (no expert reads or FLOPs, no capacity taken)
and their output rows are zeros. Without new_len every token is real.

MXFP4 layout (identical to the checkpoint, chosen because it is already what a decode GEMV
wants: each output row is contiguous along the input dim, 16-byte blocks give 128-bit loads):
  *_blocks [E, N, K/32, 16] bytes: block b of row n holds inputs 32b..32b+31; byte j holds
           element 2j in its low nibble and element 2j+1 in its high nibble; a nibble is E2M1:
           bit 3 sign, bits 0-2 index into [0, .5, 1, 1.5, 2, 3, 4, 6].
  *_scales [E, N, K/32] bytes: E8M0 exponent s, block scale 2^(s-127).
gate_up: N = 2*intermediate_size, K = hidden_size; down: N = hidden_size, K = intermediate_size.""",
    inputs=(
        Port("hidden", "T", ("tokens", "hidden_size"), "activations after the MLP norm"),
        Port("router_weight", "float32", ("num_experts", "hidden_size")),
        Port("router_bias", "float32", ("num_experts",)),
        Port("gate_up_blocks", BYTES, ("num_experts", "2*intermediate_size", "hidden_size/32", "16")),
        Port("gate_up_scales", BYTES, ("num_experts", "2*intermediate_size", "hidden_size/32")),
        Port("gate_up_bias", "float32", ("num_experts", "2*intermediate_size")),
        Port("down_blocks", BYTES, ("num_experts", "hidden_size", "intermediate_size/32", "16")),
        Port("down_scales", BYTES, ("num_experts", "hidden_size", "intermediate_size/32")),
        Port("down_bias", "float32", ("num_experts", "hidden_size")),
        Port("new_len", "int32", ("batch",), "valid tokens per batch row (see padded rows)", optional=True),
    ),
    outputs=(Port("output", "T", ("tokens", "hidden_size")),),
    attrs=(
        Attr("num_experts", "int"),
        Attr("top_k", "int"),
        Attr("hidden_size", "int"),
        Attr("intermediate_size", "int"),
        Attr("swiglu_limit", "float", 7.0),
        Attr("swiglu_alpha", "float", 1.702),
        Attr("swiglu_linear_offset", "float", 1.0),
    ),
)

GEMM_4BIT = OpSpec(
    op_type="Gemm4bit",
    plugin_version="1",
    doc="""Dense y = x @ W^T + bias with W stored in 4-bit blocks of 32 (W4A16).

weight_blocks [N, K/32, 16] bytes: byte j of block b of row n holds input elements 32b+2j (low
nibble) and 32b+2j+1 (high nibble).
format "mxfp4": nibble = E2M1 (as MoeMxfp4), weight_scales bytes [N, K/32] E8M0 -> 2^(s-127).
format "int4":  nibble = q + 8 (q in [-8, 7], offset binary), weight_scales float16 [N, K/32];
                w = q * scale (symmetric).
Accumulation in float32; output in T.""",
    inputs=(
        Port("input", "T", ("*", "in_features")),
        Port("weight_blocks", BYTES, ("out_features", "in_features/32", "16")),
        Port("weight_scales", BYTES + "|float16", ("out_features", "in_features/32"),
             "E8M0 bytes for mxfp4, float16 for int4"),
        Port("bias", "float32", ("out_features",), optional=True),
    ),
    outputs=(Port("output", "T", ("*", "out_features")),),
    attrs=(
        Attr("format", "string", None, '"mxfp4" or "int4"'),
        Attr("in_features", "int"),
        Attr("out_features", "int"),
    ),
)

SINK_ATTENTION = OpSpec(
    op_type="SinkAttention",
    plugin_version="1",
    doc="""gpt-oss attention core: RoPE (half-split/NeoX, tables given), GQA, learned sinks,
optional sliding window, KV cache update. Prefill (S > 1) and decode (S = 1), batch rows of
different lengths (right padded).

Row b brings new_len[b] valid tokens (of S) at positions past_len[b] + s.
RoPE on q and k (per head, half split): x1 = x[:D/2], x2 = x[D/2:],
  out = [x1*cos - x2*sin, x2*cos + x1*sin] with cos/sin = tables[position] (YaRN-scaled,
  concentration already folded in by the compiler).
Query head h uses kv head h // (num_heads / num_kv_heads).
Scores = scale * q . k over keys at positions kp <= qp, and, when window > 0, qp - kp < window.
Softmax over [scores, sinks[h]] (sink logit appended, unscaled, then dropped): the sink adds
exp(sinks[h]) to the denominator and has no value vector.
KV cache [B, num_kv_heads, C, head_dim] holds RoPE'd keys and values:
  window == 0: C = max context, token at position p lives in slot p;
  window  > 0: C = window (a ring), token at position p lives in slot p % window.
  A row needs past_len + new_len <= C (full) and C == window (ring); tables need
  max_positions >= past_len + new_len.
Keys seen by a query: the cached ones (the ring holds the last `window` positions before
past_len) and this step's new keys taken from the inputs, so a prefill longer than the window
in one step is exact even though the ring keeps only its last `window` tokens.
present_* = past_* with the new valid tokens written; in a ring the later position wins a slot
(TensorRT: aliased to past_*, in place).
Padded query rows (s >= new_len[b]) produce zeros.""",
    inputs=(
        Port("query", "T", ("batch", "seq", "num_heads*head_dim"), "after q_proj (+bias), before RoPE"),
        Port("key", "T", ("batch", "seq", "num_kv_heads*head_dim"), "after k_proj (+bias), before RoPE"),
        Port("value", "T", ("batch", "seq", "num_kv_heads*head_dim")),
        Port("sinks", "float32", ("num_heads",)),
        Port("rope_cos", "float32", ("max_positions", "head_dim/2")),
        Port("rope_sin", "float32", ("max_positions", "head_dim/2")),
        Port("past_key", "T", ("batch", "num_kv_heads", "cache_capacity", "head_dim")),
        Port("past_value", "T", ("batch", "num_kv_heads", "cache_capacity", "head_dim")),
        Port("past_len", "int32", ("batch",)),
        Port("new_len", "int32", ("batch",)),
    ),
    outputs=(
        Port("output", "T", ("batch", "seq", "num_heads*head_dim")),
        Port("present_key", "T", ("batch", "num_kv_heads", "cache_capacity", "head_dim")),
        Port("present_value", "T", ("batch", "num_kv_heads", "cache_capacity", "head_dim")),
    ),
    attrs=(
        Attr("num_heads", "int"),
        Attr("num_kv_heads", "int"),
        Attr("head_dim", "int"),
        Attr("window", "int", 0, "0: full attention; > 0: sliding window and ring cache"),
        Attr("scale", "float", None, "1/sqrt(head_dim) for gpt-oss"),
    ),
)

GEMM_8BIT = OpSpec(
    op_type="Gemm8bit",
    plugin_version="1",
    doc="""Dense y = x @ W^T + bias with W stored in 8-bit blocks of 32 (llama.cpp's q8_0).

weight [N, K/32, 32] int8: element k = 32b + j of row n at [n, b, j], q in [-127, 127];
weight_scales float16 [N, K/32]: d; w = q * d (exact in float32: 7 + 11 significant bits).
Accumulation in float32; output in T. CPU target only (our ONNX Runtime kernel library): the
TensorRT target keeps dense layers in 16 bits or uses Gemm4bit.""",
    inputs=(
        Port("input", "T", ("*", "in_features")),
        Port("weight", "int8", ("out_features", "in_features/32", "32")),
        Port("weight_scales", "float16", ("out_features", "in_features/32")),
        Port("bias", "float32", ("out_features",), optional=True),
    ),
    outputs=(Port("output", "T", ("*", "out_features")),),
    attrs=(
        Attr("in_features", "int"),
        Attr("out_features", "int"),
    ),
    targets=("onnxruntime",),
)

OPS: tuple[OpSpec, ...] = (MOE_MXFP4, GEMM_4BIT, SINK_ATTENTION, GEMM_8BIT)


def spec(op_type: str) -> OpSpec:
    for s in OPS:
        if s.op_type == op_type:
            return s
    raise KeyError(f"{op_type!r} is not in the gptoss_edge op set")


# --------------------------------------------------------------------------------------------
# Engine binding names (graph inputs/outputs), shared by compiler, runtime and plugins' tests.
class ENGINE_IO:
    INPUT_IDS = "input_ids"        # int64 [batch, seq]
    PAST_LEN = "past_len"          # int32 [batch]
    NEW_LEN = "new_len"            # int32 [batch]
    LOGITS_INDEX = "logits_index"  # int64 [batch, logits_rows]: step positions (0..seq-1) whose
                                   # logits are computed (decode and sampling: new_len - 1 only)
    LOGITS = "logits"              # float32 [batch, logits_rows, vocab]

    @staticmethod
    def past_key(layer: int) -> str:
        return f"past_key.{layer}"

    @staticmethod
    def past_value(layer: int) -> str:
        return f"past_value.{layer}"

    @staticmethod
    def present_key(layer: int) -> str:
        return f"present_key.{layer}"

    @staticmethod
    def present_value(layer: int) -> str:
        return f"present_value.{layer}"


def validate_attrs(s: OpSpec, attrs: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check names/kinds; raises ValueError naming the attribute."""
    known = {a.name: a for a in s.attrs}
    for name in attrs:
        if name not in known:
            raise ValueError(f"{s.op_type}: unknown attribute {name!r}")
    out: dict[str, Any] = {}
    for a in s.attrs:
        if a.name in attrs:
            v = attrs[a.name]
        elif a.default is not None:
            v = a.default
        else:
            raise ValueError(f"{s.op_type}: attribute {a.name!r} is required")
        ok = {"int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, (int, float)) and not isinstance(v, bool),
              "string": isinstance(v, str)}[a.kind]
        if not ok:
            raise ValueError(f"{s.op_type}: attribute {a.name!r} must be {a.kind}, got {v!r}")
        out[a.name] = float(v) if a.kind == "float" else v
    return out
