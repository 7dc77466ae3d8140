"""Prefix KV reuse benchmark (figures, not assertions): time to first token of each turn of a
5-turn conversation through a real server (`gptoss-edge serve` in its own process), with prefix
reuse and with `--no-prefix-reuse`, in the same run on the same engine.

The conversation is token ids sent with Generate (works on any engine, random weights
included): a system prompt, then per turn: previous prompt + the previous reply (its first id
changed, as harmony re-renders a reply with a different header) + a new user message.

    python benchmarks/prefix_reuse_bench.py                  # the embedded default model
    python benchmarks/prefix_reuse_bench.py --engine DIR --system-tokens 2048
"""
from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc

CLI = [sys.executable, "-m", "gptoss_edge.cli"]


def start_server(engine: str | None, sock: Path, reuse: bool, max_context: int) -> subprocess.Popen:
    args = CLI + ["serve"] + ([engine] if engine else []) + [
        "--listen", f"unix:{sock}", "--max-slots", "4", "--max-context", str(max_context)]
    if not reuse:
        args.append("--no-prefix-reuse")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = proc.stdout.readline()
    if not banner.startswith("serving"):
        raise SystemExit(f"server did not start: {banner}{proc.stderr.read()}")
    return proc


def timed_turn(stub, prompt: list[int], max_tokens: int) -> tuple[float, list[int]]:
    """-> (seconds to the first generated token, the generated ids)."""
    t0 = time.perf_counter()
    ttft, ids = None, []
    for resp in stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=prompt),
                                                 max_tokens=max_tokens)):
        if resp.token_ids and ttft is None:
            ttft = time.perf_counter() - t0
        ids.extend(resp.token_ids)
    return ttft, ids


def conversation(stub, rng, vocab: int, args) -> list[tuple[int, float]]:
    """One 5-turn conversation; -> [(prompt tokens, TTFT s)] per turn."""
    prompt = rng.integers(0, vocab, args.system_tokens).tolist()
    out = []
    for _ in range(args.turns):
        prompt = prompt + rng.integers(0, vocab, args.user_tokens).tolist()
        ttft, reply = timed_turn(stub, prompt, args.reply_tokens)
        out.append((len(prompt), ttft))
        prompt = prompt + [(reply[0] + 1) % vocab] + reply[1:]
    return out


def measure(engine, reuse: bool, args) -> list[list[tuple[int, float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(engine, Path(tmp) / "s.sock", reuse, args.max_context)
        try:
            with grpc.insecure_channel(f"unix:{Path(tmp) / 's.sock'}") as ch:
                stub = llm_pb2_grpc.LLMStub(ch)
                vocab = stub.ModelInfo(pb.ModelInfoRequest()).vocab_size
                vocab = min(vocab, args.vocab or vocab)
                conversation(stub, np.random.default_rng(99), vocab, args)     # warm-up
                return [conversation(stub, np.random.default_rng(seed), vocab, args)
                        for seed in range(args.repeats)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default=None, help="engine dir (default: embedded default model)")
    ap.add_argument("--system-tokens", type=int, default=1024)
    ap.add_argument("--user-tokens", type=int, default=64)
    ap.add_argument("--reply-tokens", type=int, default=32)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-context", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=None, help="draw prompt ids below this")
    args = ap.parse_args()
    runs = {reuse: measure(args.engine, reuse, args) for reuse in (False, True)}
    print(f"engine {args.engine or 'default model'}: system {args.system_tokens} tokens, user "
          f"{args.user_tokens}/turn, reply {args.reply_tokens}/turn, median of {args.repeats}")
    print(f"{'turn':>4} {'prompt':>7} {'TTFT no reuse ms':>17} {'TTFT reuse ms':>14} {'ratio':>7}")
    for t in range(args.turns):
        tokens = runs[True][0][t][0]
        off = statistics.median(r[t][1] for r in runs[False]) * 1000
        on = statistics.median(r[t][1] for r in runs[True]) * 1000
        print(f"{t + 1:>4} {tokens:>7} {off:>17.1f} {on:>14.1f} {off / on:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
