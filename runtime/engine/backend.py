"""The one backend protocol every engine implements (ONNX Runtime now, TensorRT and the numpy
reference evaluator too). The scheduler, `generate` and the gRPC server speak only this.

Model of the KV cache: the backend owns `info.max_slots` independent sequence slots. A slot is
filled by successive steps; each step appends tokens at the slot's current length. `release`
empties a slot so another sequence may use it.

Prefix reuse (optional; runtime/engine/prefix.py explains why window layers need it): a backend
that has `save_prefix` and `truncate` lets the scheduler keep a finished sequence's KV in its
slot and continue a later request from the longest prefix the two share. Contract:
  * a step writes a slot's cache only at positions >= its length (never rewrites rows below);
  * `save_prefix(slot)` remembers the slot's state at its current length L: everything that a
    later step could have overwritten by then, i.e. the window layers' buffers (ring or
    ONNX Runtime's compacted window). Saves are per slot, kept until `truncate` cuts below them
    or `release`; at most `prefix.MAX_SAVED` per slot (SavedPrefixes decides which go);
  * `truncate(slot, length)`, 0 <= length <= slot_length: the slot continues from the longest
    length k <= `length` it can reproduce exactly, k = slot_length when length equals it, else
    the longest saved prefix (window buffers copied back), else 0; returns k. Steps after it
    must give the logits a fresh slot prefilled with the same k tokens would give, bit for bit
    when chunked the same way (tests/test_prefix_reuse.py);
  * `release(slot)` also forgets the slot's saved prefixes.
`prefix.SavedPrefixes` + `prefix.truncation` hold the bookkeeping; a backend only copies its
window buffers out and back (see OrtBackend, ReferenceBackend).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from gptoss_edge.compiler.config import ModelConfig
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.target_config import TargetConfigError, target_config_of


def target_config(manifest):
    """The manifest's typed target_config (gptoss_edge/target_config.py); BackendError naming the
    field when it cannot be read."""
    try:
        return target_config_of(manifest)
    except TargetConfigError as e:
        raise BackendError(f"{e}; the engine was written by another gptoss-edge: compile it again") from None


def kv_layout_of(manifest) -> KvLayout:
    """The KV layout an engine manifest records (compile writes it; every backend sizes its cache
    from it)."""
    return target_config(manifest).kv_layout


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

    # optional, for prefix reuse (module docstring):
    # def save_prefix(self, slot: int) -> None: ...
    # def truncate(self, slot: int, length: int) -> int: ...

    def close(self) -> None: ...


def validate_rows(rows: Sequence[StepRow], info: BackendInfo, lengths: Sequence[int]) -> None:
    """The checks every backend makes on a step: BackendError naming the slot and the limit."""
    if not rows:
        raise BackendError("step needs at least one row")
    seen = set()
    for r in rows:
        if not isinstance(r.slot, (int, np.integer)) or not 0 <= r.slot < info.max_slots:
            raise BackendError(f"slot {r.slot!r} out of range [0, {info.max_slots})")
        if r.slot in seen:
            raise BackendError(f"slot {r.slot} appears twice in one step")
        seen.add(r.slot)
        n = len(r.token_ids)
        if n == 0:
            raise BackendError(f"slot {r.slot}: a step row needs at least one token")
        if n > info.max_step_tokens:
            raise BackendError(f"slot {r.slot}: {n} tokens in one step exceed max_step_tokens "
                               f"{info.max_step_tokens} (split the prompt)")
        if lengths[r.slot] + n > info.max_context:
            raise BackendError(f"slot {r.slot}: {lengths[r.slot]} + {n} tokens exceed max_context "
                               f"{info.max_context}")
        bad = [t for t in r.token_ids if not 0 <= int(t) < info.config.vocab_size]
        if bad:
            raise BackendError(f"slot {r.slot}: token id {bad[0]} outside the vocabulary "
                               f"[0, {info.config.vocab_size})")


# ---- which step positions get logits (the engine's logits_index input) ----------------------

def logits_index(new_lens: Sequence[int], seq: int, every_position: bool) -> np.ndarray:
    """[batch, rows] int64 positions of a step's [batch, seq] tokens whose logits the engine
    computes: all seq positions when some row of the step asks for all its logits, else one per
    row, its last new token (an idle row, new_len 0, points at 0; its output is dropped)."""
    if every_position:
        return np.tile(np.arange(seq, dtype=np.int64), (len(new_lens), 1))
    return np.maximum(np.asarray(new_lens, np.int64) - 1, 0).reshape(-1, 1)


def row_result(logits: np.ndarray, n: int, every_position: bool, all_logits: bool) -> np.ndarray:
    """One row's step result from its engine output `logits` [rows, vocab] (see logits_index):
    [n, vocab] when the row asked for all its logits, else its last new token's [vocab]."""
    if all_logits:
        return logits[:n].copy()
    return (logits[n - 1] if every_position else logits[0]).copy()


def contiguous_runs(slots: list[int], max_batch: int) -> list[list[int]]:
    """Sorted slots cut into runs of consecutive slots, each at most max_batch long: one engine
    execution per run (the run's cache rows are one contiguous block of every KV buffer)."""
    runs: list[list[int]] = []
    for s in sorted(slots):
        if runs and s == runs[-1][-1] + 1 and len(runs[-1]) < max_batch:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs
