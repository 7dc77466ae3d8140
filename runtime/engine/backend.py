"""The one backend protocol every engine implements (ONNX Runtime now, TensorRT and the numpy
reference evaluator too). The scheduler, `generate` and the gRPC server speak only this.

Model of the KV cache: the backend owns `info.max_slots` independent sequence slots. A slot is
filled by successive steps; each step appends tokens at the slot's current length. `release`
empties a slot so another sequence may use it.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from gptoss_edge.compiler.config import ModelConfig
from gptoss_edge.kv_layout import KvLayout, KvLayoutError


def kv_layout_of(manifest) -> KvLayout:
    """The KV layout an engine manifest records (compile writes it; every backend sizes its cache
    from it)."""
    try:
        return KvLayout.from_manifest(manifest.target_config["kv_layout"])
    except (KeyError, KvLayoutError) as e:
        raise BackendError(f"{manifest.path}/manifest.json: no usable kv_layout ({e}); the engine was "
                           f"written by an older gptoss-edge: compile it again") from None


class BackendError(RuntimeError):
    """A request the engine cannot run (bad slot, over context, ...); the message says why."""


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    config: ModelConfig
    target: str               # "onnxruntime", "tensorrt", "reference"
    max_slots: int            # sequences held at once
    max_context: int          # tokens per slot (prompt + generated)
    max_step_tokens: int      # most tokens one row may bring to one step (prefill chunk)
    kv_layout: KvLayout       # per-layer cache capacities and bytes (gptoss_edge/kv_layout.py)

    @property
    def slot_bytes(self) -> int:
        """KV bytes of one slot at full context."""
        return self.kv_layout.slot_bytes(self.max_context)


@dataclasses.dataclass(frozen=True)
class StepRow:
    slot: int                 # which sequence slot
    token_ids: Sequence[int]  # new tokens, appended at the slot's current length
    all_logits: bool = False  # return logits for every new token, not just the last


class Backend(Protocol):
    @property
    def info(self) -> BackendInfo: ...

    def slot_length(self, slot: int) -> int:
        """Tokens currently cached for `slot`."""

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        """Run one engine step over several slots at once (each slot at most once per step,
        rows may bring different numbers of tokens). Returns, per row, float32 logits of shape
        [vocab] (last new token) or [len(token_ids), vocab] when `all_logits`."""

    def release(self, slot: int) -> None:
        """Forget the slot's cache; the slot may be reused immediately."""

    def close(self) -> None: ...
