"""KV slot budget and the scheduler's bookkeeping, directly (no gRPC)."""
from __future__ import annotations

import asyncio
import pytest

from gptoss_edge.compiler.config import preset
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.runtime.engine.backend import BackendInfo
from gptoss_edge.runtime.engine.kv import SlotPool, parse_bytes, slots_for_budget
from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams
from gptoss_edge.runtime.engine.scheduler import Overloaded, Scheduler, SchedulerClosed, SeqRequest
from conftest import ort_backend


def info(**kw) -> BackendInfo:
    base = dict(config=preset("tiny"), target="t", max_slots=16, max_context=1000,
                max_step_tokens=64, kv_layout=KvLayout.of(preset("tiny")))
    return BackendInfo(**{**base, **kw})


def test_parse_bytes():
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1.5g") == 1_500_000_000
    assert parse_bytes("4096") == 4096
    with pytest.raises(ValueError, match="--max-memory"):
        parse_bytes("lots")


def test_slots_from_memory_budget():
    assert slots_for_budget(info(), None) == 16
    slot = KvLayout.of(preset("tiny")).slot_bytes(1000)           # one slot at max_context 1000
    assert slots_for_budget(info(), 3 * slot) == 3
    assert slots_for_budget(info(), 3 * slot - 1) == 2
    assert slots_for_budget(info(), 10**12) == 16                 # capped by the engine
    with pytest.raises(ValueError, match="holds no KV slot"):
        slots_for_budget(info(), 1000)


def test_slot_pool():
    pool = SlotPool(2)
    a, b = pool.acquire(), pool.acquire()
    assert (a, b, pool.acquire(), pool.used) == (0, 1, None, 2)
    pool.release(a)
    assert pool.free == 1
    with pytest.raises(ValueError):
        pool.release(a)


def greedy(n=8):
    return Sampler(SamplingParams(temperature=0.0, max_tokens=n))


def test_admission_queue_then_overloaded_then_closed(tiny_engine):
    async def main():
        sched = Scheduler(ort_backend(tiny_engine, max_slots=1, max_context=64), 1, max_queue=1)
        sched.start()
        first = sched.submit(SeqRequest([1, 2, 3], greedy(), 40))
        second = sched.submit(SeqRequest([1, 2, 3], greedy(), 2))
        with pytest.raises(Overloaded, match="1 KV slots"):
            sched.submit(SeqRequest([1, 2, 3], greedy(), 2))
        first.cancel()
        tokens = [ev.token_id async for ev in second]
        assert len(tokens) == 2 and first.end.reason == "cancelled"
        await sched.wait_idle()
        assert sched.slots.free == 1
        sched.stop_accepting()
        with pytest.raises(SchedulerClosed):
            sched.submit(SeqRequest([1], greedy(), 1))
        await sched.close()
    asyncio.run(main())


def test_context_limit_ends_with_length(tiny_engine):
    async def main():
        sched = Scheduler(ort_backend(tiny_engine, max_slots=2, max_context=20), 2)
        sched.start()
        s = sched.submit(SeqRequest(list(range(1, 16)), greedy(100), 100))
        events = [ev async for ev in s]
        await sched.close()
        return events
    events = asyncio.run(main())
    # 15 prompt tokens + 6 generated: the 6th is sampled from position 20 and never fed back
    assert len(events) == 6 and events[-1].finish == "length"


def test_engine_fault_ends_the_step_streams_not_the_scheduler(tiny_engine):
    backend = ort_backend(tiny_engine, max_slots=2, max_context=64)
    real_step = backend.step

    def faulty_step(rows):             # the engine fails once, like a driver error would
        if backend.fail:
            backend.fail = False
            raise RuntimeError("engine fault")
        return real_step(rows)

    backend.fail = False
    backend.step = faulty_step

    async def main():
        sched = Scheduler(backend, 2)
        sched.start()
        first = [ev.token_id async for ev in sched.submit(SeqRequest([1, 2], greedy(), 3))]
        backend.fail = True
        with pytest.raises(RuntimeError, match="engine fault"):
            _ = [ev async for ev in sched.submit(SeqRequest([1, 2], greedy(), 3))]
        second = [ev.token_id async for ev in sched.submit(SeqRequest([1, 2], greedy(), 3))]
        await sched.wait_idle()
        free = sched.slots.free
        await sched.close()
        return first, second, free
    first, second, free = asyncio.run(main())
    assert first == second and len(first) == 3 and free == 2
