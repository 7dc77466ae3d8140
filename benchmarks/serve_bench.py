"""Serving benchmark (figures, not assertions), all ratios measured in the same run:

  1. aggregate decode tok/s of 8 concurrent greedy Generate streams vs 1 (target >= 3x),
  2. server overhead per token: the same workload through the gRPC server (its own process,
     `gptoss-edge serve`, client in this process) vs driving the backend directly here, with
     the same sampler (target <= 5%),
  3. an RSS soak: 8 concurrent streams back to back, RSS sampled every second (target: no growth
     after warm-up). Short by default; `--soak-minutes 10` for the full soak.

    python benchmarks/serve_bench.py                       # tiny synthetic checkpoint
    python benchmarks/serve_bench.py --shape 20b-4layer    # gpt-oss-20b shapes, 4 layers (~GBs)
    python benchmarks/serve_bench.py --engine DIR          # any compiled engine

Checkpoints are synthetic (random weights, real format), compiled for ONNX Runtime on CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.synthetic import write_checkpoint
from gptoss_edge.runtime.clients.bench import (format_row, random_prompts, run_direct, run_server_streams)
from gptoss_edge.runtime.engine.ort_backend import OrtBackend


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_engine(shape: str, work: Path) -> Path:
    if shape == "tiny":
        cfg, opts = preset("tiny"), CompileOptions(experts="float", max_positions=2048)
    else:   # gpt-oss-20b shapes (hidden 2880, 32 experts top-4, vocab 201088), 4 layers
        cfg = preset("gpt-oss-20b").with_layers(4)
        opts = CompileOptions(experts="int4", dense="4bit", max_positions=2048)
    print(f"writing a synthetic {shape} checkpoint and compiling it ...", flush=True)
    write_checkpoint(work / "ckpt", cfg, "hf", 0)
    compile_checkpoint(work / "ckpt", work / "engine", opts, show_progress=False)
    return work / "engine"


def start_server(engine: Path, sock: Path, args) -> subprocess.Popen:
    log = sock.with_suffix(".log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptoss_edge.cli", "serve", str(engine), "--listen",
         f"unix:{sock}", "--max-slots", str(args.max_slots), "--max-context", "1024",
         "--max-step-tokens", str(args.step_tokens)], stdout=log.open("w"),
        stderr=subprocess.STDOUT, text=True)
    while "\nserving '" not in "\n" + log.read_text():      # the banner, not a warning
        if proc.poll() is not None:
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.2)
    print(log.read_text().strip(), flush=True)
    return proc


async def throughput(address: str, backend, vocab: int, prompt_len: int, gen: int,
                     levels: list[int], repeats: int) -> None:
    """Per concurrency, median over `repeats` of the server run and the direct run; printed
    as soon as each level is measured."""
    await run_server_streams(address, random_prompts(vocab, 2, 8, 7), 4)      # warm-up
    run_direct(backend, random_prompts(vocab, 2, 8, 7), 4)
    base = dbase = None
    for c in levels:
        prompts = random_prompts(vocab, c, prompt_len, seed=c)
        srv, direct = [], []
        for _ in range(repeats):
            srv.append(await run_server_streams(address, prompts, gen))
            direct.append(run_direct(backend, prompts, gen))
        srv_f, direct_f = (sorted(r, key=lambda f: f.decode_tok_s)[len(r) // 2]
                           for r in (srv, direct))
        base, dbase = base or srv_f.decode_tok_s, dbase or direct_f.decode_tok_s
        overhead = srv_f.s_per_token / direct_f.s_per_token - 1
        print(format_row("server", srv_f) + f"  x{srv_f.decode_tok_s / base:.2f} vs c={levels[0]}")
        print(format_row("direct", direct_f) + f"  x{direct_f.decode_tok_s / dbase:.2f};"
              f" server overhead/token {100 * overhead:+.1f}%", flush=True)


async def soak(address: str, pid: int, vocab: int, seconds: float, concurrency: int
               ) -> list[tuple]:
    samples, t0 = [], time.monotonic()
    stop = asyncio.Event()

    async def sampler():
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_mib(pid)))
            await asyncio.sleep(1.0)

    task = asyncio.create_task(sampler())
    rounds = 0
    while time.monotonic() - t0 < seconds:
        await run_server_streams(address, random_prompts(vocab, concurrency, 48, seed=rounds), 48)
        rounds += 1
    stop.set()
    await task
    print(f"soak: {rounds} rounds of {concurrency} streams in {time.monotonic() - t0:.0f} s")
    return samples


async def main_async(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="gptoss-edge-serve-bench-"))
    engine = Path(args.engine) if args.engine else build_engine(args.shape, work)
    levels = [int(c) for c in args.concurrency.split(",")]
    args.max_slots = max(levels)
    server = start_server(engine, work / "s.sock", args)
    address = f"unix:{work}/s.sock"
    backend = OrtBackend(engine, max_slots=max(levels), max_context=1024,
                         max_step_tokens=args.step_tokens)
    vocab = backend.info.config.vocab_size
    print(f"engine {engine} ({backend.info.target}, {backend.info.config.num_hidden_layers} "
          f"layers, vocab {vocab}), prompt {args.prompt_tokens}, generate {args.gen_tokens}, "
          f"median of {args.repeats}")
    try:
        await throughput(address, backend, vocab, args.prompt_tokens, args.gen_tokens, levels,
                         args.repeats)
        backend.close()
        samples = await soak(address, server.pid, vocab, args.soak_minutes * 60, max(levels))
        warm = [r for t, r in samples if t >= min(10.0, samples[-1][0] / 3)]
        print(f"server RSS MiB: start {samples[0][1]:.0f}, after warm-up {warm[0]:.0f}, "
              f"end {samples[-1][1]:.0f}, max {max(r for _, r in samples):.0f} "
              f"(growth after warm-up {samples[-1][1] - warm[0]:+.1f} MiB)")
    finally:
        server.terminate()
        server.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["tiny", "20b-4layer"], default="tiny")
    ap.add_argument("--engine", help="use this compiled engine instead of a synthetic one")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--step-tokens", type=int, default=64, help="prefill chunk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--soak-minutes", type=float, default=0.5)
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
