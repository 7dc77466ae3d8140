"""Serving measurements shared by `gptoss-edge bench` and benchmarks/: TTFT and aggregate
decode tokens/s of N concurrent Generate streams through a real server, the same workload run
straight on the backend (no server) as the same-run baseline, and peak RSS. Figures, not
assertions."""
from __future__ import annotations

import asyncio
import dataclasses
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from gptoss_edge.runtime.engine.backend import Backend, StepRow
from gptoss_edge.v1 import llm_pb2 as pb


@dataclasses.dataclass
class RunFigures:
    concurrency: int
    tokens: int               # generated tokens, all streams
    wall_s: float             # first request sent -> last token received
    ttft_ms_p50: float
    decode_tok_s: float       # aggregate: tokens after each stream's first / decode window

    @property
    def s_per_token(self) -> float:
        return self.wall_s / max(1, self.tokens)


def random_prompts(vocab: int, n: int, length: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, length).tolist() for _ in range(n)]


async def run_server_streams(address: str, prompts: list[list[int]], gen_tokens: int,
                             token: str | None = None) -> RunFigures:
    """All prompts as concurrent greedy Generate streams (max_tokens = gen_tokens)."""
    from gptoss_edge.runtime.clients.dial import llm_stub, open_channel

    async with open_channel(address, token=token) as channel:
        stub = llm_stub(channel)

        async def one(prompt):
            t0 = time.perf_counter()
            stamps = []
            req = pb.GenerateRequest(tokens=pb.TokenIds(ids=prompt), max_tokens=gen_tokens)
            async for resp in stub.Generate(req):
                stamps.extend([time.perf_counter()] * len(resp.token_ids))
            return t0, stamps

        t_start = time.perf_counter()
        results = await asyncio.gather(*[one(p) for p in prompts])
    return _figures(len(prompts), t_start, results)


def run_direct(backend: Backend, prompts: list[list[int]], gen_tokens: int) -> RunFigures:
    """Same workload on the backend alone: chunked prefill, then one step per token for all
    rows at once, sampled by the same greedy Sampler the server uses (temperature 0)."""
    from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams

    samplers = [Sampler(SamplingParams(temperature=0.0, max_tokens=gen_tokens)) for _ in prompts]
    info = backend.info
    t_start = time.perf_counter()
    slots = list(range(len(prompts)))
    last = {}
    stamps: dict[int, list[float]] = {s: [] for s in slots}
    for s, prompt in zip(slots, prompts):
        for i in range(0, len(prompt), info.max_step_tokens):
            logits = backend.step([StepRow(s, prompt[i:i + info.max_step_tokens])])[0]
        last[s] = samplers[s].sample(logits).token_id
        stamps[s].append(time.perf_counter())
    for _ in range(gen_tokens - 1):
        out = backend.step([StepRow(s, [last[s]]) for s in slots])
        now = time.perf_counter()
        for s, lg in zip(slots, out):
            last[s] = samplers[s].sample(lg).token_id
            stamps[s].append(now)
    for s in slots:
        backend.release(s)
    return _figures(len(prompts), t_start, [(t_start, stamps[s]) for s in slots])


def _figures(concurrency: int, t_start: float, results) -> RunFigures:
    """decode_tok_s is the steady state: tokens after the last stream's first token, over the
    time from then to the last token (prefill excluded, all streams decoding)."""
    tokens = sum(len(st) for _, st in results)
    firsts = [st[0] for _, st in results if st]
    lasts = [st[-1] for _, st in results if st]
    start = max(firsts) if firsts else 0.0
    steady = sum(1 for _, st in results for t in st if t > start)
    window = max(lasts) - start if lasts else 0.0
    return RunFigures(
        concurrency=concurrency, tokens=tokens,
        wall_s=(max(lasts) - t_start) if lasts else 0.0,
        ttft_ms_p50=1000 * statistics.median(st[0] - t0 for t0, st in results if st),
        decode_tok_s=steady / window if window > 0 else float("nan"))


def parse_levels(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]; ValueError naming --concurrency otherwise."""
    try:
        levels = [int(c) for c in text.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ValueError(f"--concurrency {text!r}: expected positive integers such as 1,4,8")
    return levels


def peak_rss_mib() -> float:
    """Peak resident set of this process (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_row(label: str, f: RunFigures) -> str:
    return (f"{label:<8} c={f.concurrency:<2} tokens={f.tokens:<5} ttft_p50={f.ttft_ms_p50:8.1f} ms"
            f"  decode={f.decode_tok_s:8.1f} tok/s  wall={f.wall_s:6.2f} s")


async def bench_main(args) -> int:
    from gptoss_edge.engine_dir import EngineDirError
    from gptoss_edge.cli.serve import check_positive, engine_limits
    from gptoss_edge.runtime.engine.opener import open_engine
    from gptoss_edge.runtime.frontends.grpc_server import Server, ServeOptions

    try:
        levels = parse_levels(args.concurrency)
        check_positive(args, "prompt_tokens", "gen_tokens")
        limits = engine_limits(args)
        engine = open_engine(args.engine_dir, dataclasses.replace(
            limits, max_slots=max(limits.max_slots, max(levels))), backend=args.backend)
    except (ValueError, OSError, EngineDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    backend, name = engine.backend, engine.name
    sock_dir = Path(tempfile.mkdtemp(prefix="gptoss-edge-bench-"))
    server = await Server.start(backend, engine.tokenizer, ServeOptions(
        listen=f"unix:{sock_dir / 's.sock'}", model_name=name, max_queue=max(levels)))
    vocab = backend.info.config.vocab_size
    print(f"engine {name} ({backend.info.target}), {server.model.scheduler.slots.total} slots, "
          f"prompt {args.prompt_tokens} tokens, {args.gen_tokens} generated per stream")
    try:
        await run_server_streams(server.address, random_prompts(vocab, 1, 8, 99), 4)  # warm-up
        base = None
        for c in levels:
            figs = await run_server_streams(
                server.address, random_prompts(vocab, c, args.prompt_tokens, seed=c),
                args.gen_tokens)
            base = base or figs.decode_tok_s
            print(format_row("server", figs) + f"  x{figs.decode_tok_s / base:.2f} vs c=1")
    except grpc.aio.AioRpcError as e:
        print(f"error: the server refused a bench stream: {e.code().name}: {e.details()}",
              file=sys.stderr)
        return 1
    finally:
        await server.stop()
        backend.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    return 0
