"""The tensors of a gpt-oss checkpoint: canonical (Hugging Face) names, shapes, stored dtypes,
and how the OpenAI `original/` layout maps onto them.

Canonical names (HF `GptOssForCausalLM` checkpoint keys), per layer N:
    model.embed_tokens.weight                          [V, H]            BF16
    model.layers.N.input_layernorm.weight              [H]               BF16
    model.layers.N.self_attn.q_proj.{weight,bias}      [Hq*D, H], [Hq*D] BF16
    model.layers.N.self_attn.{k,v}_proj.{weight,bias}  [Hkv*D, H], [..]  BF16
    model.layers.N.self_attn.o_proj.{weight,bias}      [H, Hq*D], [H]    BF16
    model.layers.N.self_attn.sinks                     [Hq]              BF16
    model.layers.N.post_attention_layernorm.weight     [H]               BF16
    model.layers.N.mlp.router.{weight,bias}            [E, H], [E]       BF16
    model.layers.N.mlp.experts.gate_up_proj_blocks     [E, 2I, H/32, 16] U8  (rows: even gate, odd linear)
    model.layers.N.mlp.experts.gate_up_proj_scales     [E, 2I, H/32]     U8
    model.layers.N.mlp.experts.gate_up_proj_bias       [E, 2I]           BF16
    model.layers.N.mlp.experts.down_proj_{blocks,scales,bias}  [E, H, I/32, 16], [E, H, I/32], [E, H]
    model.norm.weight [H] BF16,  lm_head.weight [V, H] BF16
Original layout (gpt_oss/torch/model.py + weights.py): embedding.weight, block.N.attn.norm.scale,
block.N.attn.qkv.{weight,bias} (rows q | k | v), block.N.attn.sinks, block.N.attn.out.{weight,bias},
block.N.mlp.norm.scale, block.N.mlp.gate.{weight,bias}, block.N.mlp.mlp1_weight.{blocks,scales},
block.N.mlp.mlp1_bias, block.N.mlp.mlp2_weight.{blocks,scales}, block.N.mlp.mlp2_bias,
norm.scale, unembedding.weight. Same shapes, same dtypes, same expert row order.
"""
from __future__ import annotations

import dataclasses

from .config import ModelConfig

MXFP4_SUFFIXES = ("_blocks", "_scales", ".blocks", ".scales")


@dataclasses.dataclass(frozen=True)
class Expected:
    """One stored tensor: its shape and the dtype it is released in (BF16 for floats, U8 for
    MXFP4 blocks/scales). Float tensors are also accepted as F16/F32."""
    shape: tuple[int, ...]
    dtype: str

    @property
    def is_float(self) -> bool:
        return self.dtype != "U8"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a canonical tensor lives in a layout: a stored key, optionally a row range."""
    key: str
    rows: tuple[int, int] | None = None


def is_mxfp4(name: str) -> bool:
    return name.endswith(MXFP4_SUFFIXES)


def canonical_tensors(cfg: ModelConfig) -> dict[str, Expected]:
    """Every tensor of the HF layout, in checkpoint order (embeddings, layers, norm, head)."""
    h, v, e, i = cfg.hidden_size, cfg.vocab_size, cfg.num_local_experts, cfg.intermediate_size
    bf16 = lambda *shape: Expected(tuple(shape), "BF16")  # noqa: E731
    u8 = lambda *shape: Expected(tuple(shape), "U8")      # noqa: E731
    out = {"model.embed_tokens.weight": bf16(v, h)}
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        out |= {
            p + "input_layernorm.weight": bf16(h),
            p + "self_attn.q_proj.weight": bf16(cfg.q_size, h),
            p + "self_attn.q_proj.bias": bf16(cfg.q_size),
            p + "self_attn.k_proj.weight": bf16(cfg.kv_size, h),
            p + "self_attn.k_proj.bias": bf16(cfg.kv_size),
            p + "self_attn.v_proj.weight": bf16(cfg.kv_size, h),
            p + "self_attn.v_proj.bias": bf16(cfg.kv_size),
            p + "self_attn.o_proj.weight": bf16(h, cfg.q_size),
            p + "self_attn.o_proj.bias": bf16(h),
            p + "self_attn.sinks": bf16(cfg.num_attention_heads),
            p + "post_attention_layernorm.weight": bf16(h),
            p + "mlp.router.weight": bf16(e, h),
            p + "mlp.router.bias": bf16(e),
            p + "mlp.experts.gate_up_proj_blocks": u8(e, 2 * i, h // 32, 16),
            p + "mlp.experts.gate_up_proj_scales": u8(e, 2 * i, h // 32),
            p + "mlp.experts.gate_up_proj_bias": bf16(e, 2 * i),
            p + "mlp.experts.down_proj_blocks": u8(e, h, i // 32, 16),
            p + "mlp.experts.down_proj_scales": u8(e, h, i // 32),
            p + "mlp.experts.down_proj_bias": bf16(e, h),
        }
    out["model.norm.weight"] = bf16(h)
    out["lm_head.weight"] = bf16(v, h)
    return out


# canonical suffix (after model.layers.N.) -> original suffix (after block.N.)
_LAYER_RENAMES = {
    "input_layernorm.weight": "attn.norm.scale",
    "self_attn.sinks": "attn.sinks",
    "self_attn.o_proj.weight": "attn.out.weight",
    "self_attn.o_proj.bias": "attn.out.bias",
    "post_attention_layernorm.weight": "mlp.norm.scale",
    "mlp.router.weight": "mlp.gate.weight",
    "mlp.router.bias": "mlp.gate.bias",
    "mlp.experts.gate_up_proj_blocks": "mlp.mlp1_weight.blocks",
    "mlp.experts.gate_up_proj_scales": "mlp.mlp1_weight.scales",
    "mlp.experts.gate_up_proj_bias": "mlp.mlp1_bias",
    "mlp.experts.down_proj_blocks": "mlp.mlp2_weight.blocks",
    "mlp.experts.down_proj_scales": "mlp.mlp2_weight.scales",
    "mlp.experts.down_proj_bias": "mlp.mlp2_bias",
}
_GLOBAL_RENAMES = {"model.embed_tokens.weight": "embedding.weight",
                   "model.norm.weight": "norm.scale", "lm_head.weight": "unembedding.weight"}


def original_tensors(cfg: ModelConfig) -> dict[str, Expected]:
    """Every tensor of the original layout with its expected shape and dtype."""
    canonical = canonical_tensors(cfg)
    out: dict[str, Expected] = {}
    for name, exp in canonical.items():
        src = original_source(cfg, name)
        if src.rows is None:
            out[src.key] = exp
        elif src.key not in out:
            rows = cfg.q_size + 2 * cfg.kv_size
            out[src.key] = Expected((rows,) + exp.shape[1:], exp.dtype)
    return out


def original_source(cfg: ModelConfig, name: str) -> Source:
    """Where canonical tensor `name` lives in the original layout (KeyError if not canonical)."""
    if name in _GLOBAL_RENAMES:
        return Source(_GLOBAL_RENAMES[name])
    parts = name.split(".", 3)
    if len(parts) != 4 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
        raise KeyError(name)
    n, rest = int(parts[2]), parts[3]
    if n >= cfg.num_hidden_layers:
        raise KeyError(name)
    if rest in _LAYER_RENAMES:
        return Source(f"block.{n}.{_LAYER_RENAMES[rest]}")
    qkv = {"q": (0, cfg.q_size), "k": (cfg.q_size, cfg.q_size + cfg.kv_size),
           "v": (cfg.q_size + cfg.kv_size, cfg.q_size + 2 * cfg.kv_size)}
    for proj, rows in qkv.items():
        for kind in ("weight", "bias"):
            if rest == f"self_attn.{proj}_proj.{kind}":
                return Source(f"block.{n}.attn.qkv.{kind}", rows)
    raise KeyError(name)
