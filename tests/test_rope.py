"""YaRN RoPE tables against both references' own code (gpt_oss.torch RotaryEmbedding and
transformers' GptOssRotaryEmbedding), for the tiny and the real head_dim."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.graph import rope

POSITIONS = 4096


def openai_tables(cfg):
    from gpt_oss.torch.model import RotaryEmbedding
    r = RotaryEmbedding(cfg.head_dim, int(cfg.rope_theta), torch.float32, cfg.rope_original_context,
                        cfg.rope_scaling_factor, cfg.rope_beta_slow, cfg.rope_beta_fast)
    c, s = r._compute_cos_sin(POSITIONS)
    return c.numpy(), s.numpy()


def hf_tables(cfg):
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding
    d = {k: v for k, v in cfg.to_hf_dict().items() if k != "quantization_config"}
    c, s = GptOssRotaryEmbedding(GptOssConfig(**d))(torch.zeros(1), torch.arange(POSITIONS)[None])
    half = cfg.head_dim // 2
    return c[0, :, :half].numpy(), s[0, :, :half].numpy()


@pytest.mark.parametrize("name", ["tiny", "gpt-oss-20b"])
@pytest.mark.parametrize("reference", [openai_tables, hf_tables], ids=["openai", "hf"])
def test_yarn_tables_match_references(name, reference):
    cfg = preset(name)
    cos, sin = rope.cos_sin(cfg, POSITIONS)
    ref_cos, ref_sin = reference(cfg)
    # Both references compute inv_freq in float32 with torch's pow (~1 ulp off); we round the
    # exact value once. The angle error is position x 1 ulp(inv_freq) <= 4096 x 6e-8 ~ 2.4e-4 rad
    # in the worst case; measured 2.1e-5 on tables of magnitude 1.35 (concentration 1.3466).
    assert np.abs(cos - ref_cos).max() < 5e-5 and np.abs(sin - ref_sin).max() < 5e-5
    assert np.isclose(np.abs(cos).max(), 0.1 * np.log(32) + 1, rtol=1e-6)    # concentration folded in


def test_no_truncation_of_the_ramp():
    """gpt-oss keeps the fractional YaRN ramp bounds (truncate=False): the blend of interpolation
    and extrapolation uses low/high as computed, not floor(low)/ceil(high)."""
    import math
    cfg = preset("tiny")
    d_half = cfg.head_dim / 2
    low = d_half * math.log(cfg.rope_original_context / (cfg.rope_beta_fast * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = d_half * math.log(cfg.rope_original_context / (cfg.rope_beta_slow * 2 * math.pi)) / math.log(cfg.rope_theta)
    base = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim)
    f = cfg.rope_scaling_factor

    def blend(lo, hi):
        ramp = np.clip((np.arange(d_half) - lo) / (hi - lo), 0, 1)
        return base / f * ramp + base * (1 - ramp)
    ours = rope.inv_freq(cfg).astype(np.float64)
    np.testing.assert_allclose(ours, blend(low, high), rtol=1e-6)
    assert (np.abs(ours - blend(math.floor(low), math.ceil(high))) / ours).max() > 0.1   # per frequency
