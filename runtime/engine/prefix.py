"""Prefix KV reuse: a later request continues from the KV a slot already holds for the tokens it
shares with that slot (a follow-up chat turn, a common system prompt) instead of prefilling
them again.

Why saved prefixes. A slot's full-attention layers hold every position it ever took, and a
step only writes positions at and beyond the slot's length, so cutting the slot back to any
length P leaves rows [0, P) exactly as a fresh prefill of those tokens would have made them.
Window layers are different: they hold only the last `sliding_window` positions, so once the
sequence has run past P + 1 the positions P - 127 .. P - 1 that the next token needs are gone
(a ring overwrites them; ONNX Runtime's buffer evicts them). Re-prefilling "the last window"
cannot rebuild them exactly either: a window layer's keys at position q depend on the window
layers below at q - 127 .. q, so the dependency reaches back (window - 1) x (number of window
layers) positions and the full layers would be rewritten with different values on the way. So
a backend copies its window-layer buffers at chosen lengths (`save_prefix`) and `truncate`
restores one: the slot is then bit for bit the state it had at that length.

What the scheduler saves: the slot at the end of every prompt (a follow-up turn starts with
the previous prompt) and at every multiple of `stride` tokens while prefilling (a shared
system prompt is reused up to the last multiple below the point where two prompts differ).
A slot keeps at most `limit` (MAX_SAVED) saved prefixes; beyond that the second-lowest goes
(the lowest, a shared system prompt's first save point, and the latest turns stay).
One saved prefix costs the slot's window buffers: KvLayout.ring_bytes_per_slot x ring_slots
(gpt-oss-20b fp16: 3 MiB; float32 6 MiB), so at most 4 x that per slot, which --max-memory
counts (opener.EngineLimits.saved_prefixes; runtime/SERVING.md).
"""
from __future__ import annotations

from typing import Any, Sequence

REUSE_STRIDE = 1024       # saved-prefix spacing inside long prompts (tokens)
MAX_SAVED = 4             # saved prefixes one slot keeps (memory: see the docstring)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def choose_slot(prompt: Sequence[int], free: Sequence[int],
                cached: dict[int, Sequence[int]]) -> tuple[int, int]:
    """The free slot whose cached tokens share the longest prefix with `prompt` (at most
    len(prompt) - 1: one prompt token must still be stepped to produce logits); ties go to the
    slot listed first in `free`. -> (slot, usable prefix length)."""
    best, best_len = free[0], -1
    for slot in free:
        n = min(common_prefix(prompt, cached.get(slot, ())), len(prompt) - 1)
        if n > best_len:
            best, best_len = slot, n
    return best, max(best_len, 0)


def save_points(start: int, end: int, prompt_len: int, stride: int = REUSE_STRIDE) -> bool:
    """Whether the slot is saved after a prefill chunk covering [start, end): at the prompt's
    end or on a stride multiple."""
    return end == prompt_len or (end > start and end % stride == 0)


def chunk_limit(prefilled: int, stride: int = REUSE_STRIDE) -> int:
    """Most tokens the next prefill chunk may take so that it ends on the next stride multiple
    (chunks never step over a save point)."""
    return stride - prefilled % stride


class SavedPrefixes:
    """Per-slot saved states: length -> the backend's window-layer copies (opaque here)."""

    def __init__(self, limit: int = MAX_SAVED):
        if limit < 2:
            raise ValueError(f"a slot needs room for at least 2 saved prefixes, got {limit}")
        self.limit = limit
        self._saved: dict[int, dict[int, Any]] = {}

    def add(self, slot: int, length: int, payload: Any) -> None:
        saved = self._saved.setdefault(slot, {})
        saved[length] = payload
        while len(saved) > self.limit:
            del saved[self._victim(saved)]

    @staticmethod
    def _victim(saved: dict[int, Any]) -> int:
        """The second-lowest length: the lowest (a shared system prompt's first save point)
        and the newest ones (the latest turns) stay longest."""
        return sorted(saved)[1]

    def best(self, slot: int, length: int) -> tuple[int, Any]:
        """The longest saved length <= `length` and its payload; (0, None) if none."""
        saved = self._saved.get(slot, {})
        fits = [n for n in saved if n <= length]
        if not fits:
            return 0, None
        n = max(fits)
        return n, saved[n]

    def drop_above(self, slot: int, length: int) -> None:
        """Forget saves beyond `length` (their positions are about to be rewritten)."""
        saved = self._saved.get(slot, {})
        for n in [n for n in saved if n > length]:
            del saved[n]

    def clear(self, slot: int) -> None:
        self._saved.pop(slot, None)

    def count(self, slot: int) -> int:
        return len(self._saved.get(slot, {}))


def truncation(saved: SavedPrefixes, slot: int, length: int, current: int) -> tuple[int, Any]:
    """Where `truncate(slot, length)` can land exactly on a slot holding `current` tokens:
    (current, None) when nothing is cut, else the longest saved prefix <= length and its payload
    to restore ((0, None) when there is none). Saves beyond the kept length are forgotten."""
    if not 0 <= length <= current:
        raise ValueError(f"slot {slot}: cannot keep {length} of its {current} cached tokens")
    if length == current:
        kept, payload = current, None
    else:
        kept, payload = saved.best(slot, length)
    saved.drop_above(slot, kept)
    return kept, payload
