"""MXFP4 quantization-aware finishing: the last steps train the experts through their MXFP4 values.

Longer training makes the small model sharper and the MXFP4 rounding of its experts costlier
(2400 plain steps: assistant-token perplexity +1.45% after `gptoss-edge quantize`, the goal is
<= 1%). gpt-oss itself was post-trained with its MoE weights in MXFP4; this does the same at the
end of the recipe: each expert tensor is seen through encode -> decode of the project's own
quantizer (compiler/mxfp4.py: OCP MX block of 32 along the input dim, E8M0 scale, E2M1
round-to-nearest-even), with a straight-through gradient to the float weights. At the end the
float weights are replaced by their MXFP4 values, so `gptoss-edge quantize` stores them exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils import parametrize

from gptoss_edge.compiler import mxfp4

EXPERT_TENSORS = ("gate_up_proj", "down_proj")   # transformers GptOssExperts: [E, in, out]


def mxfp4_values(w: torch.Tensor) -> torch.Tensor:
    """[E, in, out] float -> the same shape holding decode(encode(w)) with blocks along `in`
    (the layout `gptoss-edge quantize` writes: compiler/quantize.py encode_expert)."""
    a = np.swapaxes(w.detach().to(torch.float32).cpu().numpy(), 1, 2)
    q = mxfp4.decode(*mxfp4.encode(a)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(q, 1, 2))).to(w.dtype)


class StraightThroughMxfp4(torch.nn.Module):
    """Forward: the MXFP4 values; backward: identity (the straight-through estimator)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (mxfp4_values(w) - w).detach()


def expert_modules(model) -> list:
    return [layer.mlp.experts for layer in model.model.layers]


def start(model) -> None:
    """From now on every forward sees the experts' MXFP4 values."""
    for experts in expert_modules(model):
        for name in EXPERT_TENSORS:
            parametrize.register_parametrization(experts, name, StraightThroughMxfp4())


def finish(model) -> None:
    """Drop the parametrization and keep the MXFP4 values as the weights (exact on the grid)."""
    for experts in expert_modules(model):
        for name in EXPERT_TENSORS:
            parametrize.remove_parametrizations(experts, name, leave_parametrized=True)
