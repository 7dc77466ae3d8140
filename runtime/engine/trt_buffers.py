"""Device memory of the TensorRT backend, planned before anything is allocated (pure; tested on
CPU against `gptoss-edge plan`).

  * KV cache, resident on the device: per layer, K and V of [max_slots, kv_heads, capacity,
    head_dim] in the kv_layout's dtype; capacity = the window (128-slot ring) on window layers,
    max_context on full layers, so the cache is exactly max_slots x KvLayout.slot_bytes(max_context),
    the figure `plan` states for batch = max_slots.
  * Without past/present aliasing (a TensorRT that cannot alias plugin I/O, PlanRecord.kv_aliased
    false) a second, per-step `present` buffer of max_batch slots receives the plugin's output
    and is copied back into the slots after the step: + max_batch x slot_bytes.
  * Step I/O: input_ids and logits_index [max_batch, max_step] int64, past_len/new_len
    [max_batch] int32, logits [max_batch, 1, vocab] float32 (a sampling step computes one row per
    slot; copied to the host into a pinned [max_batch, vocab] buffer). A chunk step that asks for
    every position's logits (selftest, perplexity) needs [max_batch, max_step, vocab]: that buffer
    (`every_position_logits`) is allocated on the first such step and kept.
  * Weights outside the plan (build-engine's streamed weights): their bytes, loaded once.
"""
from __future__ import annotations

import dataclasses

from gptoss_edge.kv_layout import KvLayout


@dataclasses.dataclass(frozen=True)
class KvBuffer:
    layer: int
    capacity: int
    shape: tuple[int, int, int, int]   # [max_slots, kv_heads, capacity, head_dim]
    slot_stride: int                   # bytes of one slot (one of K or V)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.slot_stride


def kv_buffers(layout: KvLayout, max_slots: int, max_context: int) -> list[KvBuffer]:
    """One entry per layer (the same shape serves K and V)."""
    layers = sorted(layout.ring_layers + layout.full_layers)
    out = []
    for i in layers:
        cap = layout.capacity(i, max_context)
        stride = layout.num_kv_heads * cap * layout.head_dim * layout.itemsize
        out.append(KvBuffer(i, cap, (max_slots, layout.num_kv_heads, cap, layout.head_dim), stride))
    return out


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    kv_cache: int
    kv_present_scratch: int
    step_io: int
    logits: int
    every_position_logits: int     # allocated on first use only (not in device_total)
    pinned_host: int
    streamed_weights: int

    @property
    def device_total(self) -> int:
        return self.kv_cache + self.kv_present_scratch + self.step_io + self.logits + self.streamed_weights


def device_plan(layout: KvLayout, *, max_slots: int, max_context: int, max_batch: int, max_step: int,
                vocab: int, aliased: bool, streamed_bytes: int) -> DevicePlan:
    kv = 2 * sum(b.nbytes for b in kv_buffers(layout, max_slots, max_context))
    scratch = 0 if aliased else max_batch * layout.slot_bytes(max_context)
    return DevicePlan(kv_cache=kv, kv_present_scratch=scratch,
                      step_io=2 * max_batch * max_step * 8 + 2 * max_batch * 4,
                      logits=max_batch * vocab * 4, every_position_logits=max_batch * max_step * vocab * 4,
                      pinned_host=max_batch * vocab * 4,
                      streamed_weights=streamed_bytes)

