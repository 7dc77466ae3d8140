"""Generation on any Backend for the `generate` CLI and library callers, through the server's
own loop: the continuous-batching Scheduler (chunked prefill, then one token per step) with the
one Sampler (runtime.engine.sampler), so a seeded `gptoss-edge generate` and a seeded server
request with the same prompt and sampling give the same tokens.

`keep_logits` records every row's logits with a tap on the backend (prefill rows all, not only
the last), plus the logits after the last generated token, which costs one extra step."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Sequence

import numpy as np

from gptoss_edge.runtime.engine.backend import Backend, BackendError, StepRow
from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams
from gptoss_edge.runtime.engine.scheduler import Scheduler, SeqRequest


@dataclasses.dataclass(frozen=True)
class Generation:
    token_ids: list[int]              # generated tokens (not the prompt)
    logits: np.ndarray | None         # [len(prompt) + len(token_ids), vocab] when asked; row i =
                                      # logits computed at position i of prompt + generated
    finish_reason: str                # "length" or "stop"


class LogitTap:
    """Backend proxy that asks every row for all its logits, keeps them (in step order: this
    is for one sequence at a time) and hands the scheduler the last row as usual."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.rows: list[np.ndarray] = []

    @property
    def info(self):
        return self.backend.info

    def slot_length(self, slot: int) -> int:
        return self.backend.slot_length(slot)

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        out = self.backend.step([dataclasses.replace(r, all_logits=True) for r in rows])
        self.rows.extend(out)
        return [o[-1] for o in out]

    def release(self, slot: int) -> None:
        self.backend.release(slot)

    def close(self) -> None:
        pass


def generate(backend: Backend, prompt: Sequence[int], max_new_tokens: int, *,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             seed: int | None = None, stop_ids: Sequence[int] = (),
             keep_logits: bool = False) -> Generation:
    """Blocking; runs its own event loop (call it from synchronous code)."""
    if not prompt:
        raise BackendError("the prompt needs at least one token")
    if max_new_tokens < 0:
        raise BackendError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    try:
        sampler = Sampler(SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k,
                                         seed=seed, max_tokens=max(1, max_new_tokens)))
    except ValueError as e:
        raise BackendError(str(e)) from None
    tap = LogitTap(backend) if keep_logits else None
    stops = frozenset(int(t) for t in stop_ids)
    tokens = asyncio.run(_run(tap or backend, list(prompt), max_new_tokens, sampler, stops,
                              keep_logits))
    reason = "stop" if tokens and tokens[-1] in stops else "length"
    logits = None
    if tap is not None:
        logits = np.concatenate([r.reshape(-1, r.shape[-1]) for r in tap.rows])
        logits = logits[:len(prompt) + len(tokens)]
    return Generation(tokens, logits, reason)


async def _run(backend, prompt: list[int], max_new: int, sampler: Sampler,
               stops: frozenset[int], keep_logits: bool) -> list[int]:
    """The tokens of one sequence through a one-slot Scheduler. With keep_logits the scheduler
    samples one token past the end (stop ids included), so the tap holds the last token's
    logits; that extra token is not returned."""
    room = backend.info.max_context - len(prompt) + 1
    if len(prompt) > backend.info.max_context:
        raise BackendError(f"prompt is {len(prompt)} tokens; the context holds "
                           f"{backend.info.max_context}")
    wanted = max_new + 1 if keep_logits else max_new
    request = SeqRequest(prompt, sampler, max(1, min(wanted, room)),
                         frozenset() if keep_logits else stops)
    backend.release(0)                         # the one slot starts empty
    scheduler = Scheduler(backend, num_slots=1, max_queue=1, prefix_reuse=False)  # one request: nothing to reuse
    scheduler.start()
    tokens: list[int] = []
    try:
        stream = scheduler.submit(request)
        async for ev in stream:
            if len(tokens) == max_new or (tokens and tokens[-1] in stops):
                break                          # keep_logits' extra token
            tokens.append(ev.token_id)
        stream.cancel()
    finally:
        await scheduler.close()
    return tokens
