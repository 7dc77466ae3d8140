"""KV slot manager: how many sequences fit in the memory budget, which slot each one holds.

The backend owns the cache tensors (`BackendInfo.max_slots` sequence slots, each up to
`max_context` tokens). The server may use fewer slots than the engine offers so the KV cache
stays inside `--max-memory`: a slot is budgeted at its full context (`KvLayout.slot_bytes`:
full-attention layers hold every token, window layers a fixed window-sized buffer).
"""
from __future__ import annotations

import re

from gptoss_edge.runtime.engine.backend import BackendInfo

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'512MiB', '2GB', '1.5g', '1048576' -> bytes. Raises ValueError naming the text."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"--max-memory: cannot read {text!r} as a size (e.g. 512MiB, 2GB, 1048576)")
    return int(float(m.group(1)) * _UNITS[unit])


def slots_in_budget(per_slot: int, max_context: int, max_slots: int,
                    max_memory: int | None) -> int:
    """Slots to use: `max_slots`, or as many slots of `per_slot` KV bytes (one sequence at
    `max_context` tokens) as fit in `max_memory` bytes."""
    if max_memory is None:
        return max_slots
    n = min(max_slots, max_memory // per_slot) if per_slot else max_slots
    if n < 1:
        raise ValueError(
            f"--max-memory {max_memory} B holds no KV slot: one slot of {max_context} tokens "
            f"needs {per_slot} B; lower --max-context or raise --max-memory")
    return int(n)


def slots_for_budget(info: BackendInfo, max_memory: int | None) -> int:
    """Slots of an opened backend to use under the budget."""
    return slots_in_budget(info.slot_bytes, info.max_context, info.max_slots, max_memory)




class SlotPool:
    """Free list of slot indices 0..n-1. Not thread-safe: used from the event loop only."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"a slot pool needs at least one slot, got {n}")
        self.total = n
        self._free = list(range(n - 1, -1, -1))  # pop() hands out slot 0 first

    def acquire(self) -> int | None:
        return self._free.pop() if self._free else None

    def free_slots(self) -> list[int]:
        """Free slot indices, the longest free first (released earliest)."""
        return list(self._free)

    def take(self, slot: int) -> None:
        """Acquire a particular free slot."""
        if slot not in self._free:
            raise ValueError(f"slot {slot} is not free (pool of {self.total})")
        self._free.remove(slot)

    def release(self, slot: int) -> None:
        if not 0 <= slot < self.total or slot in self._free:
            raise ValueError(f"slot {slot} is not held (pool of {self.total})")
        self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def used(self) -> int:
        return self.total - len(self._free)
