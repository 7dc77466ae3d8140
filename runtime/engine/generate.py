"""Generation on any Backend: chunked prefill, then one token per step (greedy at temperature 0,
else softmax sampling with a seeded generator). Shared by the `generate` CLI and the server."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from gptoss_edge.runtime.engine.backend import Backend, BackendError, StepRow


@dataclasses.dataclass(frozen=True)
class Generation:
    token_ids: list[int]              # generated tokens (not the prompt)
    logits: np.ndarray | None         # [len(prompt) + len(token_ids), vocab] when asked; row i =
                                      # logits computed at position i of prompt + generated
    finish_reason: str                # "length" or "stop"


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def prefill(backend: Backend, slot: int, prompt: Sequence[int], all_logits: bool) -> list[np.ndarray]:
    """Feed the prompt in chunks of max_step_tokens; returns per-chunk logits (all rows or last)."""
    chunk = backend.info.max_step_tokens
    return [backend.step([StepRow(slot, list(prompt[i:i + chunk]), all_logits=all_logits)])[0]
            for i in range(0, len(prompt), chunk)]


def generate(backend: Backend, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0,
             seed: int | None = None, stop_ids: Sequence[int] = (), keep_logits: bool = False,
             slot: int = 0) -> Generation:
    if not prompt:
        raise BackendError("the prompt needs at least one token")
    if max_new_tokens < 0:
        raise BackendError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    rng = np.random.default_rng(seed)
    stops = set(int(t) for t in stop_ids)
    rows: list[np.ndarray] = []
    tokens: list[int] = []
    backend.release(slot)
    try:
        out = prefill(backend, slot, prompt, keep_logits)
        if keep_logits:
            rows.extend(out)
        last = out[-1][-1] if keep_logits else out[-1]
        while len(tokens) < max_new_tokens and not (tokens and tokens[-1] in stops):
            tokens.append(sample(last, temperature, rng))
            done = len(tokens) == max_new_tokens or tokens[-1] in stops
            if keep_logits or not done:     # the dump also holds the last token's logits
                last = backend.step([StepRow(slot, [tokens[-1]])])[0]
                if keep_logits:
                    rows.append(last[None])
    finally:
        backend.release(slot)
    reason = "stop" if tokens and tokens[-1] in stops else "length"
    logits = np.concatenate(rows) if keep_logits else None
    return Generation(tokens, logits, reason)
