"""RoPE tables exactly as gpt-oss computes them (gpt_oss/torch/model.py, transformers' "yarn").

YaRN ("NTK by parts"), with gpt-oss's choices:
  * inv_freq_i = 1 / theta^(2i/D), i < D/2; interpolation = inv_freq / factor;
  * the ramp between low = D/2·ln(L0/(beta_fast·2π))/ln(theta) and
    high = D/2·ln(L0/(beta_slow·2π))/ln(theta) is NOT truncated to integers;
  * inv = interpolation·ramp + extrapolation·(1-ramp) with ramp = clamp((i-low)/(high-low), 0, 1);
  * cos and sin are both multiplied by the concentration 0.1·ln(factor)+1.
inv_freq is computed in float64 and rounded once to float32 (the references compute it in
float32 with torch's pow, ~1 ulp off the exact value); the angles position·inv_freq are float32
products like theirs. Measured against both references: |cos, sin difference| <= 2.1e-5 up to
position 4096 (angle error ~ position · 1 ulp(inv_freq)).
"""
from __future__ import annotations

import math

import numpy as np

from gptoss_edge.compiler.config import ModelConfig


def inv_freq(cfg: ModelConfig) -> np.ndarray:
    """[head_dim/2] float32 inverse frequencies after YaRN."""
    d = cfg.head_dim
    freq = cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    if cfg.rope_scaling_factor <= 1.0:
        return (1.0 / freq).astype(np.float32)
    d_half = d / 2
    low = d_half * math.log(cfg.rope_original_context / (cfg.rope_beta_fast * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = d_half * math.log(cfg.rope_original_context / (cfg.rope_beta_slow * 2 * math.pi)) / math.log(cfg.rope_theta)
    if not 0 < low < high < d_half - 1:
        raise ValueError(f"YaRN ramp [{low:.3f}, {high:.3f}] does not fit head_dim/2={d_half:g} "
                         "(rope_beta_fast/rope_beta_slow/rope_original_context)")
    interpolation = 1.0 / (cfg.rope_scaling_factor * freq)
    extrapolation = 1.0 / freq
    ramp = np.clip((np.arange(d_half) - low) / (high - low), 0.0, 1.0)
    keep = 1.0 - ramp                      # 1 -> extrapolate (high frequencies), 0 -> interpolate
    return (interpolation * (1.0 - keep) + extrapolation * keep).astype(np.float32)


def cos_sin(cfg: ModelConfig, positions: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin tables [positions, head_dim/2] float32 for positions start..start+positions-1,
    concentration folded in (SinkAttention's rope_cos/rope_sin inputs)."""
    t = np.arange(start, start + positions, dtype=np.float32)
    angles = t[:, None] * inv_freq(cfg)[None, :]          # float32 product, like the references
    c = np.float32(cfg.rope_concentration)
    return (np.cos(angles) * c).astype(np.float32), (np.sin(angles) * c).astype(np.float32)
