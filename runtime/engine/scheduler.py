"""Continuous-batching scheduler: many token streams over one backend.

One asyncio task owns all state (no locks): between engine steps it admits waiting requests to
free KV slots, drops cancelled ones (releasing their slot), and plans the next step:
  * a decode step: every sequence that is decoding brings its last sampled token;
  * a prefill step: sequences still prefilling bring the next chunk of their prompt (equal
    chunk lengths, at most `max_step_tokens` tokens per step in total);
  the two alternate while both kinds of work wait, so a long prompt delays the running streams
  by one chunk per token at most.
The step itself (backend.step + sampling) runs in a single worker thread, off the event loop.
A cancel (client gone, deadline) is honoured at the next step boundary: the slot is free
within one step.

Prefix reuse (when the backend has save_prefix/truncate; runtime/engine/prefix.py): a finished
sequence's tokens stay in its slot; a new request takes the free slot sharing the longest
prefix with its prompt, the backend cuts the slot back to the longest exact prefix it can
(a saved one), and only the rest of the prompt is prefilled. Prefill chunks end on the save
points (every prompt end, every REUSE_STRIDE tokens), where the worker saves the slot.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections import deque
from typing import Any, Protocol, Sequence

import numpy as np

from gptoss_edge.runtime.engine.backend import Backend, StepRow
from gptoss_edge.runtime.engine.kv import SlotPool
from gptoss_edge.runtime.engine.prefix import REUSE_STRIDE, choose_slot, chunk_limit, save_points
from gptoss_edge.runtime.frontends.metrics import ServerMetrics


class TokenSampler(Protocol):
    def sample(self, logits: np.ndarray) -> Any:
        """-> object with token_id, logprob, top_logprobs (runtime.sampler.SampleResult)."""


class Overloaded(RuntimeError):
    """All slots are busy and the wait queue is full (-> RESOURCE_EXHAUSTED)."""


class SchedulerClosed(RuntimeError):
    """The scheduler no longer accepts work (draining or stopped; -> UNAVAILABLE)."""


@dataclasses.dataclass(frozen=True)
class SeqRequest:
    prompt: Sequence[int]
    sampler: TokenSampler
    max_tokens: int                       # completion tokens at most (>= 1)
    stop_token_ids: frozenset[int] = frozenset()


@dataclasses.dataclass(frozen=True)
class TokenEvent:
    token_id: int
    logprob: float
    top_logprobs: Any
    finish: str | None = None             # "stop" | "length" on the last token
    is_stop_token: bool = False           # the token is one of stop_token_ids


@dataclasses.dataclass(frozen=True)
class StreamEnd:
    reason: str                           # "stop" | "length" | "cancelled" | "error"
    error: BaseException | None = None


class Stream:
    """Handle a service holds for one submitted sequence: async-iterate its TokenEvents."""

    def __init__(self, scheduler: "Scheduler", req: SeqRequest):
        self._scheduler = scheduler
        self.request = req
        self.queue: asyncio.Queue[TokenEvent | StreamEnd] = asyncio.Queue()
        self.slot: int | None = None
        self.prefilled = 0                # prompt tokens already in the cache
        self.generated: list[int] = []
        self.cancelled = False
        self.cancel_step = 0              # scheduler.steps when cancel() was called
        self.done = False
        self.end: StreamEnd | None = None
        self.t_submit = time.monotonic()
        self.t_last_token: float | None = None

    def cancel(self) -> None:
        """Stop generating; the slot is released at the next step boundary. Idempotent."""
        if not self.done and not self.cancelled:
            self.cancelled = True
            self.cancel_step = self._scheduler.steps
            self._scheduler._wake()

    def __aiter__(self):
        return self

    async def __anext__(self) -> TokenEvent:
        if self.end is not None and self.queue.empty():
            raise StopAsyncIteration
        item = await self.queue.get()
        if isinstance(item, StreamEnd):
            self.end = item
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    def ready_events(self) -> list[TokenEvent]:
        """Token events already queued (never the end marker): lets a slow consumer send
        several tokens in one message instead of falling behind."""
        out = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, StreamEnd):
                self.queue.put_nowait(item)      # the only item left; read by __anext__
                break
            out.append(item)
        return out

    @property
    def prefill_left(self) -> int:
        return len(self.request.prompt) - self.prefilled


@dataclasses.dataclass
class _Planned:
    stream: Stream
    row: StepRow
    samples: bool                         # this row's logits produce the next token
    save: bool = False                    # save the slot's prefix after the step (reuse)


class Scheduler:
    def __init__(self, backend: Backend, num_slots: int, max_queue: int = 64,
                 metrics: ServerMetrics | None = None, sample_vocab: int | None = None,
                 prefix_reuse: bool = True, reuse_stride: int = REUSE_STRIDE):
        """`sample_vocab`: only ids below it are ever sampled (the tokenizer's vocabulary when
        it is smaller than the model's: ids beyond it have no text). None: the model's.
        `prefix_reuse`: continue from cached prefixes where the backend supports it, saving
        the slot every `reuse_stride` prompt tokens and at each prompt's end."""
        self.backend = backend
        self.info = backend.info
        self.sample_vocab = sampleable_vocab(self.info.config.vocab_size, sample_vocab)
        self.slots = SlotPool(num_slots)
        self.max_queue = max_queue
        self.metrics = metrics
        self._waiting: deque[Stream] = deque()
        self._active: dict[int, Stream] = {}        # slot -> stream
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.steps = 0
        self._last_was_decode = False
        self.reuse = prefix_reuse and all(hasattr(backend, m) for m in ("save_prefix", "truncate"))
        self._cached: dict[int, list[int]] = {}     # slot -> tokens its KV holds (reuse)
        self.reused_tokens = 0                      # prompt tokens not prefilled thanks to reuse
        self.reuse_stride = reuse_stride

    # ---- public API (event loop) ------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    def submit(self, req: SeqRequest) -> Stream:
        if not self._accepting:
            raise SchedulerClosed("server is draining; not accepting new requests")
        if len(self._waiting) >= self.slots.free + self.max_queue:   # admitted at next boundary
            raise Overloaded(
                f"all {self.slots.total} KV slots are busy and the wait queue is full "
                f"({self.max_queue} requests); retry later, or serve with a larger --max-memory "
                f"or --max-queue")
        stream = Stream(self, req)
        self._waiting.append(stream)
        self._idle.clear()
        self._wake()
        return stream

    def stop_accepting(self) -> None:
        self._accepting = False

    async def wait_idle(self) -> None:
        """Return once no request is running or waiting."""
        await self._idle.wait()

    def abort_all(self) -> None:
        """End every stream now with reason 'cancelled' (shutdown after the drain grace)."""
        for s in list(self._waiting) + list(self._active.values()):
            s.cancel()
            self._finish(s, StreamEnd("cancelled"))
        self._waiting.clear()

    async def close(self) -> None:
        self.stop_accepting()
        self.abort_all()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot (not counting those a free slot takes at the next
        step boundary)."""
        return max(0, len(self._waiting) - self.slots.free)

    def cached_tokens(self) -> int:
        return sum(s.prefilled + len(s.generated) for s in self._active.values())

    # ---- the loop -----------------------------------------------------------------------------
    def _wake(self) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._reap_cancelled()
            self._release_finished()
            self._admit()
            plan = self._plan()
            self._update_gauges()
            if not plan:
                if not self._waiting and not self._active:
                    self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            t0 = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, _compute, self.backend, plan,
                                                     self.sample_vocab)
            except Exception as e:  # an engine fault ends the streams of this step, not the server
                for p in plan:
                    self._finish(p.stream, StreamEnd("error", e))
                    self._cached.pop(p.row.slot, None)      # cache state unknown: start over
                continue
            if self.metrics:
                self.metrics.step_seconds.observe(time.monotonic() - t0)
            self.steps += 1
            self._deliver(plan, results)

    def _reap_cancelled(self) -> None:
        for s in [s for s in self._waiting if s.cancelled]:
            self._waiting.remove(s)
            self._finish(s, StreamEnd("cancelled"))
        for s in [s for s in self._active.values() if s.cancelled]:
            self._finish(s, StreamEnd("cancelled"))

    def _admit(self) -> None:
        while self._waiting and self.slots.free:
            s = self._waiting.popleft()
            if self.reuse:
                # without a shared prefix: an empty slot, else the least recently used
                order = sorted(self.slots.free_slots(), key=lambda n: bool(self._cached.get(n)))
                s.slot, usable = choose_slot(s.request.prompt, order, self._cached)
                self.slots.take(s.slot)
                s.prefilled = self.backend.truncate(s.slot, usable)
                self._cached[s.slot] = list(s.request.prompt[:s.prefilled])
                self.reused_tokens += s.prefilled
            else:
                s.slot = self.slots.acquire()
            self._active[s.slot] = s
            if self.metrics:
                self.metrics.queue_time.observe(time.monotonic() - s.t_submit)

    def _plan(self) -> list[_Planned]:
        """Decode steps and prefill steps alternate while both kinds of work wait. Engines
        right-pad a step's rows to the longest, so a decode row riding along a 64-token chunk
        would cost 64 positions (and their logits); alternating keeps running streams at one
        token per two steps during a long prefill without that waste."""
        decoders = [s for s in self._active.values() if s.prefill_left == 0]
        prefillers = sorted((s for s in self._active.values() if s.prefill_left),
                            key=lambda s: s.t_submit)
        if decoders and (not prefillers or not self._last_was_decode):
            self._last_was_decode = True
            return [_Planned(s, StepRow(s.slot, [s.generated[-1]]), True) for s in decoders]
        self._last_was_decode = False
        return self._plan_prefill(prefillers)

    def _plan_prefill(self, prefillers: list[Stream]) -> list[_Planned]:
        """Chunks of equal length n (no padding), oldest request first, at most
        max_step_tokens prefill tokens per step."""
        if not prefillers:
            return []
        budget = self.info.max_step_tokens
        first = prefillers[0]
        n = min(first.prefill_left, budget)
        if self.reuse:                        # end on the next save point
            n = min(n, chunk_limit(first.prefilled, self.reuse_stride))
        plan = []
        for s in prefillers:
            if s.prefill_left >= n and budget >= n:
                start, end = s.prefilled, s.prefilled + n
                chunk = list(s.request.prompt[start:end])
                save = self.reuse and save_points(start, end, len(s.request.prompt),
                                                  self.reuse_stride)
                plan.append(_Planned(s, StepRow(s.slot, chunk), n == s.prefill_left, save))
                budget -= n
        return plan

    def _deliver(self, plan: list[_Planned], results: list[Any]) -> None:
        now = time.monotonic()
        n_new = 0
        for p, sample in zip(plan, results):
            s = p.stream
            if self.reuse and p.row.slot in self._cached:
                self._cached[p.row.slot].extend(p.row.token_ids)     # what the KV now holds
            if s.done:
                continue
            if not p.samples:
                s.prefilled += len(p.row.token_ids)
                continue
            if s.prefill_left:
                s.prefilled += len(p.row.token_ids)
                if self.metrics:
                    self.metrics.prompt.inc(len(s.request.prompt))
                    self.metrics.ttft.observe(now - s.t_submit)
            elif self.metrics and s.t_last_token is not None:
                self.metrics.itl.observe(now - s.t_last_token)
            s.t_last_token = now
            if s.cancelled:
                continue                      # reaped at the top of the next iteration
            s.generated.append(sample.token_id)
            n_new += 1
            finish = self._finish_reason(s, sample.token_id)
            s.queue.put_nowait(TokenEvent(sample.token_id, sample.logprob, sample.top_logprobs,
                                          finish, sample.token_id in s.request.stop_token_ids))
            if finish:
                self._finish(s, StreamEnd(finish))
        if self.metrics:
            self.metrics.count_tokens(n_new)

    def _finish_reason(self, s: Stream, token: int) -> str | None:
        if token in s.request.stop_token_ids:
            return "stop"
        if len(s.generated) >= s.request.max_tokens:
            return "length"
        if s.prefilled + len(s.generated) > self.info.max_context:
            return "length"                   # no room to feed this token back
        return None

    def _finish(self, s: Stream, end: StreamEnd) -> None:
        """End the stream now; its slot is released by `_release_finished` between steps
        (never while the worker thread may be stepping that slot)."""
        if s.done:
            return
        s.done = True
        s.end = end
        s.queue.put_nowait(end)
        if self.metrics:
            self.metrics.requests.labels(end.reason).inc()

    def _release_finished(self) -> None:
        for slot, s in [(k, v) for k, v in self._active.items() if v.done]:
            del self._active[slot]
            if self.reuse and slot in self._cached:
                pass                          # the KV stays for a later request to reuse
            else:
                self.backend.release(slot)
            self.slots.release(slot)
            if s.cancelled and self.metrics:
                self.metrics.cancel_release_steps.observe(self.steps - s.cancel_step)

    def _update_gauges(self) -> None:
        if self.metrics:
            self.metrics.set_kv(self.slots.used, self.slots.total, self.cached_tokens(),
                                self.info.max_context)
            self.metrics.queue_depth.set(len(self._waiting))


def sampleable_vocab(model_vocab: int, limit: int | None) -> int:
    """How many leading ids may be sampled: the model's vocabulary, cut to `limit` (the
    tokenizer's size) when that is smaller. Raises ValueError for a limit below 1."""
    if limit is None:
        return model_vocab
    if limit < 1:
        raise ValueError(f"sample_vocab must be >= 1, got {limit}")
    return min(model_vocab, int(limit))


def _compute(backend: Backend, plan: list[_Planned], sample_vocab: int) -> list[Any]:
    """Worker thread: one engine step, the prefix saves it reached, then sampling for the rows
    that produce a token. The sampler sees only the first `sample_vocab` logits (a view, no
    copy), so neither greedy nor random sampling can pick an id the tokenizer does not have;
    logprobs are over those ids."""
    logits = backend.step([p.row for p in plan])
    for p in plan:
        if p.save:
            backend.save_prefix(p.row.slot)
    return [p.stream.request.sampler.sample(lg[:sample_vocab])
            if p.samples and not p.stream.cancelled else None
            for p, lg in zip(plan, logits)]
