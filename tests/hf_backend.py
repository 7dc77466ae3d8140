"""Test helper (not shipped): the Backend protocol over Hugging Face GptOssForCausalLM, eager
fp32, with one DynamicCache per slot. It stands in for the ONNX Runtime engine while that is
being built, and stays useful as an independent oracle engine for server tests.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch
from transformers import DynamicCache, GptOssConfig, GptOssForCausalLM

from gptoss_edge.compiler.config import ModelConfig, preset
from gptoss_edge.runtime.backend import BackendError, BackendInfo, StepRow


def hf_config(cfg: ModelConfig) -> GptOssConfig:
    return GptOssConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate_size, num_local_experts=cfg.num_local_experts,
        num_experts_per_tok=cfg.num_experts_per_tok, sliding_window=cfg.sliding_window,
        layer_types=list(cfg.layer_types), rms_norm_eps=cfg.rms_norm_eps,
        swiglu_limit=cfg.swiglu_limit, max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "yarn", "rope_theta": cfg.rope_theta,
                         "factor": cfg.rope_scaling_factor, "beta_fast": cfg.rope_beta_fast,
                         "beta_slow": cfg.rope_beta_slow, "truncate": False,
                         "original_max_position_embeddings": cfg.rope_original_context},
        attn_implementation="eager")


class HFBackend:
    def __init__(self, cfg: ModelConfig | None = None, *, seed: int = 0, max_slots: int = 16,
                 max_context: int = 512, max_step_tokens: int = 64, vocab_size: int | None = None):
        cfg = cfg or preset("tiny")
        if vocab_size is not None:
            import dataclasses
            cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
        torch.set_num_threads(1)   # 2 shared cores: intra-op threads only contend (10x slower)
        torch.manual_seed(seed)
        self._hf_cfg = hf_config(cfg)
        self.model = GptOssForCausalLM(self._hf_cfg).eval()
        kv = 2 * cfg.num_key_value_heads * cfg.head_dim * 4 * cfg.num_hidden_layers  # fp32 K+V
        self._info = BackendInfo(config=cfg, target="hf-reference", max_slots=max_slots,
                                 max_context=max_context, max_step_tokens=max_step_tokens,
                                 kv_bytes_per_token=kv)
        self._caches: dict[int, DynamicCache] = {}
        self._lengths = [0] * max_slots
        self._lock = threading.Lock()   # the protocol allows one step at a time

    @property
    def info(self) -> BackendInfo:
        return self._info

    def slot_length(self, slot: int) -> int:
        return self._lengths[slot]

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        with self._lock, torch.no_grad():
            return [self._run_row(r) for r in rows]

    def _run_row(self, row: StepRow) -> np.ndarray:
        if not 0 <= row.slot < self._info.max_slots:
            raise BackendError(f"slot {row.slot} outside [0, {self._info.max_slots})")
        n, start = len(row.token_ids), self._lengths[row.slot]
        if not 0 < n <= self._info.max_step_tokens:
            raise BackendError(f"row brings {n} tokens; 1..{self._info.max_step_tokens} allowed")
        if start + n > self._info.max_context:
            raise BackendError(f"slot {row.slot}: {start}+{n} tokens exceed the context "
                               f"{self._info.max_context}")
        cache = self._caches.setdefault(row.slot, DynamicCache(config=self._hf_cfg))
        pos = torch.arange(start, start + n)
        out = self.model(torch.tensor([list(row.token_ids)]), cache=cache,
                         position_ids=pos[None], cache_position=pos, use_cache=True)
        self._lengths[row.slot] = start + n
        logits = out.logits[0].float().numpy()
        return logits if row.all_logits else logits[-1]

    def release(self, slot: int) -> None:
        with self._lock:
            self._caches.pop(slot, None)
            self._lengths[slot] = 0

    def close(self) -> None:
        self._caches.clear()
