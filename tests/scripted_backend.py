"""Test helper (not shipped): a Backend whose "model" writes a fixed harmony script, chosen by a
key found in the prompt. Random weights only produce noise, so this is how chat tests drive the
real server + harmony parser through reasoning, final answers, tool calls and malformed output
token by token. Logits are one-hot (0 everywhere, 30 on the scripted token), so greedy and
seeded sampling both follow the script."""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Sequence

import numpy as np

from gptoss_edge.compiler.config import preset
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.runtime.engine.backend import BackendError, BackendInfo, StepRow


def harmony_ids(tokenizer, text: str) -> list[int]:
    """Text with harmony special tokens by name -> ids (specials by id, the rest encoded)."""
    import re
    ids: list[int] = []
    for piece in re.split(r"(<\|[a-z]+\|>)", text):
        if re.fullmatch(r"<\|[a-z]+\|>", piece):
            ids.append(tokenizer.special_id(piece))
        elif piece:
            ids.extend(tokenizer.encode(piece))
    return ids


class ScriptedBackend:
    def __init__(self, tokenizer, scripts: dict[str, str], *, max_slots: int = 8,
                 max_context: int = 4096, max_step_tokens: int = 64, step_delay: float = 0.0):
        self.tokenizer = tokenizer
        self.scripts = {k: harmony_ids(tokenizer, v) for k, v in scripts.items()}
        cfg = dataclasses.replace(preset("tiny"), vocab_size=tokenizer.vocab_size)
        self._info = BackendInfo(cfg, "scripted", max_slots, max_context, max_step_tokens,
                                 KvLayout.of(cfg))
        self._history: dict[int, list[int]] = {}
        self._emitted: dict[int, int] = {}
        self.step_delay = step_delay
        self._lock = threading.Lock()

    @property
    def info(self) -> BackendInfo:
        return self._info

    def slot_length(self, slot: int) -> int:
        return len(self._history.get(slot, []))

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        with self._lock:
            if self.step_delay:
                time.sleep(self.step_delay)
            return [self._row(r) for r in rows]

    def _row(self, row: StepRow) -> np.ndarray:
        hist = self._history.setdefault(row.slot, [])
        if len(hist) + len(row.token_ids) > self._info.max_context:
            raise BackendError(f"slot {row.slot}: context full")
        emitted = self._emitted.get(row.slot, 0)
        script = self._script(hist + list(row.token_ids))
        logits = np.zeros(self._info.config.vocab_size, np.float32)
        if script is None:          # a prefill chunk before the key: logits go unused
            hist.extend(row.token_ids)
            return logits
        continuing = emitted > 0 and list(row.token_ids) == [script[min(emitted, len(script)) - 1]]
        hist.extend(row.token_ids)
        k = emitted if continuing else 0
        self._emitted[row.slot] = k + 1
        logits[script[min(k, len(script) - 1)]] = 30.0
        return logits

    def _script(self, history: list[int]) -> list[int] | None:
        text = self.tokenizer.decode(history)
        for key, ids in self.scripts.items():
            if key in text:
                return ids
        return None

    def release(self, slot: int) -> None:
        with self._lock:
            self._history.pop(slot, None)
            self._emitted.pop(slot, None)

    def close(self) -> None:
        pass
