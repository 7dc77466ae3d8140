"""Memory plan: what an engine of a given config needs on the device, by kind, before building it.

Bytes per parameter follow what each lowering stores (GB = 1e9 bytes, like the checkpoint sizes):
  MXFP4 block of 32: 16 bytes of nibbles + 1 byte E8M0 scale = 17/32 B/param (checkpoint bytes);
  Gemm4bit int4: 16 bytes + float16 scale = 18/32; ONNX Runtime formats: compiler/formats.py
  (QMoE int8: 1 + 4/32, int4: 0.5 + 4/32); ports the op set types float32 (router, expert biases,
  sinks, RoPE tables) and RMSNorm weights (computed in float32) take 4 B; the rest the activation
  precision (tensorrt fp16/bf16: 2 B, ONNX Runtime CPU: float32).
KV cache: 2 (K,V) x kv_heads x head_dim x bytes per token per layer; TensorRT window layers keep
  a `window`-slot ring, and so do ONNX Runtime engines (window-sized GroupQueryAttention buffers).
Activations of one step (T = batch x chunk tokens, chunk = prefill chunk):
  T x [3 x hidden x 4 (float32 residual stream, normed copy, block output)
       + (2 x q_size + 2 x kv_size) x p (q, k, v, attention output)
       + top_k x 3 x intermediate x 4 (MoE gate_up + SwiGLU, float32 accumulation)
       + vocab x (p + 4) (logits in p, cast to float32; TensorRT sizes its activation memory
         for the profile's largest logits_rows, a chunk)]
  ONNX Runtime computes logits for one row per sequence (logits_index; batch x vocab x 4 when
  sampling) and adds batch x heads x chunk x context x 4 (unfused attention scores);
  TensorRT's SinkAttention plugin streams keys in tiles, its scratch is inside the workspace.
Runtime overhead (assumed, stated): TensorRT workspace cap 256 MiB + CUDA context and
  TensorRT/cuBLAS code ~0.6 GB; ONNX Runtime arena slack and code ~0.3 GB.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from gptoss_edge.compiler import formats
from gptoss_edge.compiler.config import PRESETS, ModelConfig, load_config, preset
from gptoss_edge.kv_layout import KvLayout

GB = 1e9
TARGETS = ("tensorrt", "onnxruntime")
PRECISION_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
MXFP4_B = formats.MXFP4_B
TRT_WORKSPACE = 256 << 20
OVERHEAD = {"tensorrt": TRT_WORKSPACE + 0.6 * GB, "onnxruntime": 0.3 * GB}
EXPERT_BYTES = {"tensorrt": {"mxfp4": MXFP4_B},
                "onnxruntime": {name: f.bytes_per_param for name, f in formats.EXPERTS.items()}}
DENSE_4BIT_BYTES = {"tensorrt": {"mxfp4": MXFP4_B, "int4": 18 / 32},
                    "onnxruntime": {fmt: formats.dense("4bit", fmt).bytes_per_param
                                    for fmt in formats.DENSE_4BIT_FORMATS}}


class PlanError(ValueError):
    """An option combination a target cannot build; the message names the option."""


@dataclasses.dataclass(frozen=True)
class Item:
    section: str      # weights | kv_cache | activations | overhead
    kind: str
    bytes: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
    model: str
    target: str
    context: int
    batch: int
    options: dict
    items: tuple[Item, ...]
    budget: float

    def total(self, section: str | None = None) -> float:
        return sum(i.bytes for i in self.items if section in (None, i.section))

    @property
    def fits(self) -> bool:
        return self.total() <= self.budget


# ---- parameter counts -------------------------------------------------------------------------

def param_counts(cfg: ModelConfig) -> dict[str, int]:
    L, E, H, I = cfg.num_hidden_layers, cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    return {
        "experts": L * E * (2 * I * H + H * I),
        "expert_bias": L * E * (2 * I + H),
        "attention": L * (cfg.q_size * H * 2 + cfg.kv_size * H * 2),
        "attention_bias": L * (cfg.q_size + 2 * cfg.kv_size + H),
        "sinks": L * cfg.num_attention_heads,
        "router": L * (E * H + E),
        "norms": (2 * L + 1) * H,
        "embedding": cfg.vocab_size * H,
        "lm_head": cfg.vocab_size * H,
    }


def checkpoint_bytes(cfg: ModelConfig) -> dict[str, float]:
    """The released checkpoint's accounting: MXFP4 experts, everything else bf16."""
    n = param_counts(cfg)
    return {k: v * (MXFP4_B if k == "experts" else 2) for k, v in n.items()}


# ---- the plan ---------------------------------------------------------------------------------

def _weights(cfg, target, p, dense, dense_format, experts) -> list[Item]:
    n = param_counts(cfg)
    try:
        eb = EXPERT_BYTES[target][experts]
    except KeyError:
        raise PlanError(f"--experts {experts!r} is not available on {target} "
                        f"(choose {', '.join(EXPERT_BYTES[target])})") from None
    if dense == "4bit":
        try:
            db = DENSE_4BIT_BYTES[target][dense_format]
        except KeyError:
            raise PlanError(f"--dense-format {dense_format!r} is not available on {target} "
                            f"(choose {', '.join(DENSE_4BIT_BYTES[target])})") from None
        dnote = f"4-bit {dense_format} blocks of 32"
    elif dense == "16bit":
        db, dnote = p, f"{8 * p}-bit"
    elif dense == "8bit" and target == "onnxruntime":
        db, dnote = formats.dense("8bit").bytes_per_param, "8-bit blocks of 32 (q8_0)"
    elif dense == "8bit":
        raise PlanError(f"--dense 8bit is not available on {target} (our Gemm8bit runs on the CPU target; "
                        "choose 16bit or 4bit)")
    else:
        raise PlanError(f"--dense must be 4bit, 8bit (onnxruntime) or 16bit, got {dense!r}")
    bias_b = 4 if dense in ("4bit", "8bit") or p == 4 else p
    # ONNX Runtime keeps a bf16 checkpoint's embedding in bf16 (compile's default, Gather + Cast)
    eb_embed, enote = (2, "bf16 (Gather + Cast)") if target == "onnxruntime" else (p, f"{8 * p}-bit (Gather)")
    return [
        Item("weights", "experts", n["experts"] * eb, f"{experts}, {n['experts'] / 1e9:.2f}G params"),
        Item("weights", "expert biases", n["expert_bias"] * 4, "float32"),
        Item("weights", "attention q/k/v/o", n["attention"] * db + n["attention_bias"] * bias_b, dnote),
        Item("weights", "embedding", n["embedding"] * eb_embed, enote),
        Item("weights", "lm_head", n["lm_head"] * db, dnote),
        Item("weights", "router, sinks, norms", (n["router"] + n["sinks"] + n["norms"]) * 4, "float32"),
    ]


def _kv(cfg, p, context, batch) -> list[Item]:
    kv = KvLayout.of(cfg, "float32" if p == 4 else "float16")
    items = [Item("kv_cache", "full-attention layers", batch * context * kv.full_bytes_per_token,
                  f"{kv.full_bytes_per_token / 1024:.0f} KiB/token x {context} x batch {batch}")]
    if kv.ring_layers:
        slots = kv.ring_slots
        items.append(Item("kv_cache", "window layers (rings)", batch * slots * kv.ring_bytes_per_slot,
                          f"{slots}-slot rings, {kv.ring_bytes_per_slot / 1024:.0f} KiB/slot x batch {batch}"))
    return items


def _activations(cfg, target, p, context, batch, chunk) -> list[Item]:
    c = min(chunk, context)
    t = batch * c
    per_token = (3 * cfg.hidden_size * 4 + (2 * cfg.q_size + 2 * cfg.kv_size) * p
                 + cfg.num_experts_per_tok * 3 * cfg.intermediate_size * 4)
    rows = batch if target == "onnxruntime" else t          # see the module docstring
    items = [Item("activations", "layer activations", t * per_token, f"{t} tokens per step"),
             Item("activations", "logits", rows * cfg.vocab_size * (p + 4), f"{rows} x {cfg.vocab_size}")]
    if target == "onnxruntime":
        items.append(Item("activations", "attention scores", batch * cfg.num_attention_heads * c * context * 4,
                          "unfused, float32"))
    rope = 2 * context * (cfg.head_dim // 2) * 4
    items.append(Item("activations", "RoPE tables", rope, f"{context} positions, float32"))
    return items


def memory_plan(cfg: ModelConfig, *, target: str, context: int, batch: int, dense: str = "16bit",
                dense_format: str = "mxfp4", experts: str | None = None, precision: str | None = None,
                chunk: int = 512, budget_gb: float = 14.0, model: str = "") -> Plan:
    if target not in TARGETS:
        raise PlanError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if context < 1 or batch < 1 or chunk < 1:
        raise PlanError(f"--context, --batch and --chunk must be positive (got {context}, {batch}, {chunk})")
    if context > cfg.max_position_embeddings:
        raise PlanError(f"--context {context} exceeds the model's {cfg.max_position_embeddings} positions")
    precision = precision or ("fp16" if target == "tensorrt" else "fp32")
    if precision not in PRECISION_BYTES:
        raise PlanError(f"--precision must be one of {', '.join(PRECISION_BYTES)}, got {precision!r}")
    if target == "onnxruntime" and precision != "fp32":
        raise PlanError("--precision: the ONNX Runtime CPU engine runs float32")
    p = PRECISION_BYTES[precision]
    experts = experts or "mxfp4"
    items = (_weights(cfg, target, p, dense, dense_format, experts) + _kv(cfg, p, context, batch)
             + _activations(cfg, target, p, context, batch, chunk)
             + [Item("overhead", "runtime + workspace", OVERHEAD[target], "assumed, see compiler/plan.py")])
    options = dict(precision=precision, dense=dense, dense_format=dense_format if dense == "4bit" else None,
                   experts=experts, chunk=chunk)
    return Plan(model or "custom", target, context, batch, options, tuple(items), budget_gb * GB)


def default_dense(cfg: ModelConfig, **kw) -> str:
    """The dense format a plan uses when none is asked for: 16-bit (the activation precision)
    when that fits the budget, else 4-bit blocks (what a 16 GB device needs for gpt-oss-20b)."""
    return "16bit" if memory_plan(cfg, dense="16bit", **kw).fits else "4bit"


def max_context(cfg: ModelConfig, **kw) -> int:
    """Largest context (multiple of 1024, or the model's maximum) whose plan fits the budget; 0 if none."""
    top = cfg.max_position_embeddings
    best, lo, hi = 0, 1, top // 1024
    while lo <= hi:
        mid = (lo + hi) // 2
        if memory_plan(cfg, context=mid * 1024, **kw).fits:
            best, lo = mid * 1024, mid + 1
        else:
            hi = mid - 1
    return best


# ---- rendering and CLI ------------------------------------------------------------------------

def format_plan(plan: Plan, headroom_context: int | None = None) -> str:
    o = plan.options
    head = (f"memory plan: {plan.model} -> {plan.target} ({o['precision']}, experts {o['experts']}, "
            f"dense {o['dense']}{'/' + o['dense_format'] if o['dense_format'] else ''}), "
            f"context {plan.context}, batch {plan.batch}, prefill chunk {o['chunk']}")
    lines = [head]
    for section in ("weights", "kv_cache", "activations", "overhead"):
        lines.append(f"  {section:<12} {plan.total(section) / GB:8.3f} GB")
        for i in plan.items:
            if i.section == section:
                lines.append(f"    {i.kind:<24} {i.bytes / GB:8.3f} GB   {i.note}")
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(f"  {'total':<12} {plan.total() / GB:8.3f} GB   {verdict} a {plan.budget / GB:.1f} GB budget")
    if headroom_context is not None:
        lines.append(f"  largest context that fits at batch {plan.batch}: "
                     f"{headroom_context if headroom_context else 'none'}")
    return "\n".join(lines)


def plan_to_dict(plan: Plan) -> dict:
    return {"model": plan.model, "target": plan.target, "context": plan.context, "batch": plan.batch,
            "options": plan.options, "budget_bytes": plan.budget, "total_bytes": plan.total(),
            "fits": plan.fits, "items": [dataclasses.asdict(i) for i in plan.items]}


def resolve_model(arg: str) -> tuple[ModelConfig, str]:
    """A preset name, or a checkpoint directory / config.json path of either layout."""
    if arg in PRESETS:
        return preset(arg), arg
    p = Path(arg)
    if not p.exists():
        raise PlanError(f"{arg!r} is neither a preset ({', '.join(PRESETS)}) nor an existing path")
    if p.is_dir() and not (p / "config.json").exists() and (p / "original" / "config.json").exists():
        p = p / "original"
    return load_config(p), p.name if p.is_dir() else p.parent.name
