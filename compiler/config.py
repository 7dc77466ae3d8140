"""ModelConfig: one frozen dataclass mirroring a gpt-oss config.json.

Reads either layout:
  * Hugging Face `config.json` (keys as released with gpt-oss-20b/120b; transformers >= 5
    `rope_parameters` is accepted too),
  * OpenAI `original/config.json` (`num_experts`, `experts_per_token`, `rope_scaling_factor`, ...).
Unknown keys and inconsistent values raise ConfigError naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

SLIDING = "sliding_attention"
FULL = "full_attention"


class ConfigError(ValueError):
    """A config.json that cannot describe a gpt-oss model; the message names the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int          # per expert
    num_local_experts: int
    num_experts_per_tok: int
    rms_norm_eps: float = 1e-5
    sliding_window: int = 128
    layer_types: tuple[str, ...] = ()   # default: even layers sliding, odd layers full
    swiglu_limit: float = 7.0
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0   # YaRN factor; 1.0 disables YaRN
    rope_original_context: int = 4096   # YaRN original_max_position_embeddings
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    max_position_embeddings: int = 131072
    eos_token_id: int | None = 200002
    pad_token_id: int | None = 199999

    def __post_init__(self) -> None:
        if not self.layer_types:
            default = tuple(SLIDING if i % 2 == 0 else FULL for i in range(self.num_hidden_layers))
            object.__setattr__(self, "layer_types", default)
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        _validate(self)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def mxfp4_block(self) -> int:
        return 32

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING

    @property
    def rope_concentration(self) -> float:
        """YaRN attention scaling applied to both cos and sin: 0.1*ln(factor)+1 (1.0 without YaRN)."""
        f = self.rope_scaling_factor
        return 0.1 * math.log(f) + 1.0 if f > 1.0 else 1.0

    def with_layers(self, n: int) -> "ModelConfig":
        """Same model with the first n layers (keeps the sliding/full alternation)."""
        return dataclasses.replace(self, num_hidden_layers=n, layer_types=self.layer_types[:n])

    # ---- serialization -------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """config.json exactly in the shape gpt-oss ships it on the Hugging Face hub."""
        return {
            "architectures": ["GptOssForCausalLM"],
            "attention_bias": True,
            "attention_dropout": 0.0,
            "eos_token_id": self.eos_token_id,
            "experts_per_token": self.num_experts_per_tok,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initial_context_length": self.rope_original_context,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_types": list(self.layer_types),
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "gpt_oss",
            "num_attention_heads": self.num_attention_heads,
            "num_experts_per_tok": self.num_experts_per_tok,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "num_local_experts": self.num_local_experts,
            "output_router_logits": False,
            "pad_token_id": self.pad_token_id,
            "quantization_config": {
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"],
                "quant_method": "mxfp4",
            },
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": {
                "beta_fast": self.rope_beta_fast,
                "beta_slow": self.rope_beta_slow,
                "factor": self.rope_scaling_factor,
                "original_max_position_embeddings": self.rope_original_context,
                "rope_type": "yarn",
                "truncate": False,
            },
            "rope_theta": self.rope_theta,
            "router_aux_loss_coef": 0.9,
            "sliding_window": self.sliding_window,
            "swiglu_limit": self.swiglu_limit,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.55.0",
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }

    def to_original_dict(self) -> dict[str, Any]:
        """`original/config.json` as OpenAI's gpt_oss reference reads it."""
        return {
            "num_hidden_layers": self.num_hidden_layers,
            "num_experts": self.num_local_experts,
            "experts_per_token": self.num_experts_per_tok,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "swiglu_limit": self.swiglu_limit,
            "head_dim": self.head_dim,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "sliding_window": self.sliding_window,
            "initial_context_length": self.rope_original_context,
            "rope_theta": self.rope_theta,
            "rope_scaling_factor": self.rope_scaling_factor,
            "rope_ntk_alpha": self.rope_beta_slow,
            "rope_ntk_beta": self.rope_beta_fast,
        }

    def to_dict(self) -> dict[str, Any]:
        """Our own canonical form (manifest.json): field names of this dataclass."""
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of to_dict; unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in model config")
        return cls(**{k: tuple(v) if k == "layer_types" else v for k, v in d.items()})


# ---- parsing the two released layouts -----------------------------------------------------

# Keys of the released HF config.json that carry no information we need; accepted, not used.
_HF_IGNORED = {
    "architectures", "attention_dropout", "hidden_act", "initializer_range", "model_type",
    "output_router_logits", "router_aux_loss_coef", "torch_dtype", "dtype", "transformers_version",
    "use_cache", "bos_token_id", "quantization_config", "experts_per_token",
}
_HF_FIELDS = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "num_local_experts", "num_experts_per_tok", "rms_norm_eps",
    "sliding_window", "layer_types", "swiglu_limit", "max_position_embeddings", "eos_token_id",
    "pad_token_id",
}
_ORIGINAL_KEYS = {
    "num_hidden_layers": "num_hidden_layers", "num_experts": "num_local_experts",
    "experts_per_token": "num_experts_per_tok", "vocab_size": "vocab_size",
    "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
    "swiglu_limit": "swiglu_limit", "head_dim": "head_dim",
    "num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_key_value_heads",
    "sliding_window": "sliding_window", "initial_context_length": "rope_original_context",
    "rope_theta": "rope_theta", "rope_scaling_factor": "rope_scaling_factor",
    "rope_ntk_alpha": "rope_beta_slow", "rope_ntk_beta": "rope_beta_fast",
}


def from_hf_dict(d: Mapping[str, Any]) -> ModelConfig:
    kw: dict[str, Any] = {}
    for key, value in d.items():
        if key in _HF_FIELDS:
            kw[key] = value
        elif key == "initial_context_length":
            kw["rope_original_context"] = value
        elif key in ("rope_scaling", "rope_parameters"):
            kw.update(_parse_rope(key, value or {}))
        elif key == "rope_theta":
            kw["rope_theta"] = value
        elif key == "attention_bias":
            _require(key, value is True, "gpt-oss has biases on q/k/v/o (must be true)")
        elif key == "tie_word_embeddings":
            _require(key, value is False, "gpt-oss has an untied lm_head (must be false)")
        elif key == "model_type":
            _require(key, value == "gpt_oss", f"expected 'gpt_oss', got {value!r}")
        elif key not in _HF_IGNORED:
            raise ConfigError(f"unknown key {key!r} in config.json")
    if "experts_per_token" in d and "num_experts_per_tok" in d:
        _require("experts_per_token", d["experts_per_token"] == d["num_experts_per_tok"],
                 "disagrees with num_experts_per_tok")
    elif "experts_per_token" in d:
        kw["num_experts_per_tok"] = d["experts_per_token"]
    return _construct(kw, "config.json")


def _parse_rope(key: str, rope: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rope_type = rope.get("rope_type", rope.get("type", "yarn"))
    if rope_type not in ("yarn", "default"):
        raise ConfigError(f"{key}.rope_type: gpt-oss uses 'yarn', got {rope_type!r}")
    names = {"factor": "rope_scaling_factor", "beta_fast": "rope_beta_fast",
             "beta_slow": "rope_beta_slow", "original_max_position_embeddings": "rope_original_context",
             "rope_theta": "rope_theta"}
    for k, v in rope.items():
        if k in names:
            out[names[k]] = v
        elif k == "truncate":
            _require(f"{key}.truncate", v is False, "gpt-oss YaRN does not truncate the ramp")
        elif k not in ("rope_type", "type", "attention_factor", "mscale", "mscale_all_dim"):
            raise ConfigError(f"unknown key {key}.{k!r} in config.json")
    if rope_type == "default":
        out["rope_scaling_factor"] = 1.0
    return out


def from_original_dict(d: Mapping[str, Any]) -> ModelConfig:
    kw: dict[str, Any] = {}
    for key, value in d.items():
        if key not in _ORIGINAL_KEYS:
            raise ConfigError(f"unknown key {key!r} in original/config.json")
        kw[_ORIGINAL_KEYS[key]] = value
    return _construct(kw, "original/config.json")


def load_config(path: str | Path) -> ModelConfig:
    """Read a config.json of either layout (a file, or a directory holding config.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no config.json") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: top level must be a JSON object")
    is_original = "num_experts" in d and "num_local_experts" not in d
    try:
        return from_original_dict(d) if is_original else from_hf_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def _construct(kw: dict[str, Any], source: str) -> ModelConfig:
    required = [f.name for f in dataclasses.fields(ModelConfig)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in kw:
            raise ConfigError(f"missing key {name!r} in {source}")
    if "layer_types" in kw:
        kw["layer_types"] = tuple(kw["layer_types"])
    return ModelConfig(**kw)


def _require(key: str, ok: bool, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {why}")


def _validate(c: ModelConfig) -> None:
    ints = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "num_local_experts",
            "num_experts_per_tok", "sliding_window", "rope_original_context",
            "max_position_embeddings"]
    for name in ints:
        v = getattr(c, name)
        _require(name, isinstance(v, int) and not isinstance(v, bool) and v > 0,
                 f"must be a positive integer, got {v!r}")
    for name in ["rms_norm_eps", "swiglu_limit", "rope_theta", "rope_scaling_factor",
                 "rope_beta_fast", "rope_beta_slow"]:
        v = getattr(c, name)
        _require(name, isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                 f"must be a positive number, got {v!r}")
    _require("num_attention_heads", c.num_attention_heads % c.num_key_value_heads == 0,
             f"{c.num_attention_heads} query heads are not a multiple of "
             f"{c.num_key_value_heads} key/value heads")
    _require("num_experts_per_tok", c.num_experts_per_tok <= c.num_local_experts,
             f"top-{c.num_experts_per_tok} of {c.num_local_experts} experts")
    _require("head_dim", c.head_dim % 2 == 0, "RoPE needs an even head_dim")
    for name in ("hidden_size", "intermediate_size"):
        _require(name, getattr(c, name) % 32 == 0,
                 f"{getattr(c, name)} is not a multiple of the MXFP4 block (32)")
    _require("layer_types", len(c.layer_types) == c.num_hidden_layers,
             f"{len(c.layer_types)} entries for {c.num_hidden_layers} layers")
    for i, t in enumerate(c.layer_types):
        _require(f"layer_types[{i}]", t in (SLIDING, FULL), f"unknown layer type {t!r}")
    _require("rope_beta_fast", c.rope_beta_fast > c.rope_beta_slow,
             "must exceed rope_beta_slow (YaRN ramp)")


# ---- presets ---------------------------------------------------------------------------------

_COMMON = dict(hidden_size=2880, num_attention_heads=64, num_key_value_heads=8, head_dim=64,
               intermediate_size=2880, num_experts_per_tok=4, vocab_size=201088)

PRESETS: dict[str, ModelConfig] = {
    "gpt-oss-20b": ModelConfig(num_hidden_layers=24, num_local_experts=32, **_COMMON),
    "gpt-oss-120b": ModelConfig(num_hidden_layers=36, num_local_experts=128, **_COMMON),
    # Same architecture, small enough for unit tests: GQA 2:1 (4 q heads, 2 kv heads),
    # 8 experts top-2, a 128-token window like the real model.
    "tiny": ModelConfig(vocab_size=512, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, intermediate_size=64,
                        num_local_experts=8, num_experts_per_tok=2, eos_token_id=None,
                        pad_token_id=None),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
