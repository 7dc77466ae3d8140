"""Benchmark (figures only, asserts nothing): decode and prefill at a long context, our
SinkAttention CPU kernel against ONNX Runtime's GroupQueryAttention on the same engine.

The synthetic gpt-oss-20b-shaped checkpoint (kept under --data, as benchmarks/cpu_peers.py
writes it) is compiled twice with the 20b default formats (mxfp4 experts, 8-bit dense, int8
activations): `--attention auto` (full-attention layers on our kernel) and `--attention gqa`
(every layer on GroupQueryAttention). Each round runs both, interleaved, each in a fresh
subprocess with ONNX Runtime's profiler on: a --context-token prompt in 512-token steps, then
--decode greedy steps one token each. Printed per engine and round: the prefill seconds, the
decode ms per step (wall) and the attention ops' ms per decode step (profiler kernel time), and
the medians with their ratio.

    python benchmarks/long_context.py [--layers 4] [--context 4096] [--decode 16] [--rounds 2]
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_peers import ensure_checkpoint  # noqa: E402

STEP = 512
ATTENTION_OPS = ("SinkAttention", "GroupQueryAttention")


def phase_run(a: argparse.Namespace) -> dict:
    import numpy as np

    from gptoss_edge.runtime.engine import ort_backend
    from gptoss_edge.runtime.engine.backend import StepRow

    prefix = tempfile.mkdtemp(prefix="long_context_") + "/prof"
    plain = ort_backend.session_options

    def profiled(threads=None, tc=None, cpu_isa="auto"):
        so = plain(threads, tc, cpu_isa)
        so.enable_profiling = True
        so.profile_file_prefix = prefix
        return so

    ort_backend.session_options = profiled
    be = ort_backend.OrtBackend(a.engine, max_slots=1, max_context=a.context + a.decode + 8, max_step_tokens=STEP,
                                threads=a.threads, verify="sizes")
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for i in range(0, a.context, STEP):
        logits = be.step([StepRow(0, rng.integers(0, 199998, min(STEP, a.context - i)).tolist())])[0]
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(a.decode):
        logits = be.step([StepRow(0, [int(np.argmax(logits))])])[0]
    decode = (time.perf_counter() - t0) / a.decode
    events = json.load(open(be.session.end_profiling()))
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-a.decode:]
    lo, hi = runs[0]["ts"], runs[-1]["ts"] + runs[-1]["dur"] + 1
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and lo <= e["ts"] < hi:
            per_op[e["args"].get("op_name", "?")] += e["dur"]
    attention = sum(per_op[op] for op in ATTENTION_OPS) / a.decode / 1e3
    return {"prefill_s": prefill, "decode_ms": decode * 1e3, "attention_ms": attention}


def run_phase(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--phase", *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"exited {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_engine(ckpt: Path, out: Path, attention: str, positions: int) -> None:
    if (out / "manifest.json").exists():
        return
    print(f"compiling {out.name}", flush=True)
    subprocess.run([sys.executable, "-m", "gptoss_edge.cli", "compile", str(ckpt), "-o", str(out), "--experts", "mxfp4",
                    "--dense", "8bit", "--activations", "int8", "--attention", attention, "--max-positions",
                    str(positions), "--no-progress"], check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--decode", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        print(json.dumps(phase_run(a)))
        return 0
    ckpt = a.data / f"gpt-oss-20b-{a.layers}l"
    ensure_checkpoint(ckpt, a.layers)
    positions = a.context + a.decode + 64
    engines = {mode: a.data / "engines" / f"gpt-oss-20b-{a.layers}l-long{positions}-{mode}" for mode in ("auto", "gqa")}
    for mode, path in engines.items():
        compile_engine(ckpt, path, mode, positions)
    results: dict[str, list[dict]] = {mode: [] for mode in engines}
    for r in range(a.rounds):
        for mode, path in engines.items():
            res = run_phase(["--engine", str(path), "--context", str(a.context), "--decode", str(a.decode),
                             "--threads", str(a.threads)])
            results[mode].append(res)
            print(f"round {r + 1} {mode}: {json.dumps(res)}", flush=True)
    print(f"\n{a.layers}-layer gpt-oss-20b shape (synthetic), {a.threads} threads, context {a.context}, "
          f"{a.decode} decode steps, {a.rounds} interleaved rounds (medians)")
    print("| attention | prefill s | decode ms/step | attention ms/step |\n|---|---|---|---|")
    med = {}
    for mode, runs in results.items():
        ok = [x for x in runs if "error" not in x]
        if not ok:
            print(f"| {mode} | failed | | |")
            continue
        med[mode] = {k: statistics.median(x[k] for x in ok) for k in ("prefill_s", "decode_ms", "attention_ms")}
        m = med[mode]
        print(f"| {mode} | {m['prefill_s']:.1f} | {m['decode_ms']:.1f} | {m['attention_ms']:.2f} |")
    if len(med) == 2:
        print(f"decode tok/s auto / gqa: {med['gqa']['decode_ms'] / med['auto']['decode_ms']:.2f}x; "
              f"attention {med['gqa']['attention_ms'] / med['auto']['attention_ms']:.2f}x less time; "
              f"prefill {med['auto']['prefill_s'] / med['gqa']['prefill_s']:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
