"""Benchmark (figures only, asserts nothing): full-size gpt-oss-20b on the ONNX Runtime target.

For each expert mode: compile a full-size synthetic gpt-oss-20b checkpoint (wall time, peak RSS;
target <= 3 GiB), then load the engine, prefill 512 tokens in one step and decode 128 tokens
greedily at batch 1 (tokens/s, peak RSS; target with int4 experts: <= 14 GiB, a 16 GB device).
Every phase runs in its own subprocess, which reports its own peak RSS (getrusage ru_maxrss:
resident pages, file-backed mmap pages included) and, sampled every 0.2 s, its peak anonymous
RSS (RssAnon: memory only this process holds; the rest of its RSS is clean file pages, e.g. the
mmap'd checkpoint, that the kernel can drop under pressure).

Baseline measured in the same run: the machine's sequential memory-read bandwidth (numpy sum over
a 1 GiB buffer). Decode is memory-bound at batch 1, so decode tokens/s is also given as a fraction
of the ceiling bandwidth / (bytes the engine reads per token), with bytes per token counted from
the engine's ONNX initializers (experts x top_k/num_experts, dense weights in full, one
embedding row).

    python benchmarks/ort_20b.py [--checkpoint /tmp/gptoss-bench/gpt-oss-20b]
                                 [--configs mxfp4:4bit int4:4bit]  # EXPERTS:DENSE per engine

Engines are written under --work and deleted after measuring (--keep-engines keeps them); they
take 10-30 GB of disk each. A serving phase whose weights cannot fit the free RAM is skipped
(the machine has no swap; an OOM would take other work with it) and says so; so is a compile
whose estimated engine size does not fit the free disk with 5 GiB to spare.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gptoss_edge.compiler.config import load_config

GiB = 1 << 30
DEFAULT_CKPT = Path("/tmp/gptoss-bench/gpt-oss-20b")


# ---- phases (run in child processes) -------------------------------------------------------------

def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class AnonPeak:
    """Samples /proc/self/status RssAnon in a daemon thread; .peak in bytes."""

    def __init__(self, interval: float = 0.2):
        import threading
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sample()

    def sample(self) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)
        return self.peak

    def stop(self) -> int:
        self._stop.set()
        return self.sample()


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def phase_compile(a: argparse.Namespace) -> dict:
    from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
    anon = AnonPeak()
    t0 = time.monotonic()
    s = compile_checkpoint(a.checkpoint, a.engine, CompileOptions(
        target="onnxruntime", experts=a.mode, dense=a.dense, max_positions=a.max_positions,
        activations="int8" if a.mode == "int8" else "float"),      # int8 experts run int8 activations only
        show_progress=False)
    return {"seconds": time.monotonic() - t0, "peak_rss": peak_rss(), "peak_anon": anon.stop(),
            "experts": s.experts,
            "engine_bytes": sum(s.file_bytes.values())}


def phase_serve(a: argparse.Namespace) -> dict:
    import numpy as np

    from gptoss_edge.runtime.engine.backend import StepRow
    from gptoss_edge.runtime.engine.ort_backend import OrtBackend
    anon = AnonPeak()
    t0 = time.monotonic()
    be = OrtBackend(a.engine, max_slots=1, max_context=a.prefill + a.decode + 1,
                    max_step_tokens=a.prefill, threads=a.threads, verify=a.verify)
    load_s, rss_loaded = time.monotonic() - t0, current_rss()
    prompt = np.random.default_rng(0).integers(0, be.info.config.vocab_size, a.prefill).tolist()
    t0 = time.monotonic()
    logits = be.step([StepRow(0, prompt)])[0]
    prefill_s = time.monotonic() - t0
    t0 = time.monotonic()
    for _ in range(a.decode):
        logits = be.step([StepRow(0, [int(np.argmax(logits))])])[0]
    decode_s = time.monotonic() - t0
    return {"load_s": load_s, "rss_after_load": rss_loaded, "prefill_s": prefill_s,
            "prefill_tok_s": a.prefill / prefill_s, "decode_s": decode_s,
            "decode_tok_s": a.decode / decode_s, "peak_rss": peak_rss(), "peak_anon": anon.stop()}


def phase_bandwidth(a: argparse.Namespace) -> dict:
    import numpy as np
    buf = np.ones(GiB // 8, np.float64)
    buf.sum()                                       # fault the pages in
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        buf.sum()
        best = max(best, buf.nbytes / (time.perf_counter() - t0))
    return {"bytes_per_s": best}


PHASES = {"compile": phase_compile, "serve": phase_serve, "bandwidth": phase_bandwidth}


# ---- parent ----------------------------------------------------------------------------------------

def run_phase(name: str, args: list[str]) -> dict:
    """Run one phase in a fresh interpreter; its last stdout line is its JSON result."""
    cmd = [sys.executable, __file__, "--phase", name, *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode} after {time.monotonic() - t0:.0f} s"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bytes_per_token(engine: Path) -> dict:
    """Weight bytes one decode step reads: expert initializers x top_k/num_experts (MoE/QMoE
    weight inputs), the embedding table's one row, every other initializer in full."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from gptoss_edge.engine_dir import load_manifest
    m = load_manifest(engine, verify=False)
    model = onnx.load(str(m.file(m.target_config.get("model_file", "model.onnx"))), load_external_data=False)
    size = {}
    for t in model.graph.initializer:
        n = ExternalDataInfo(t).length if uses_external_data(t) else len(t.raw_data)
        size[t.name] = int(n or 0)
    # Expert tensors: MoE/QMoE inputs after (hidden, router logits); MoeMxfp4 after (hidden,
    # router weight, router bias).
    first = {"MoE": 2, "QMoE": 2, "MoeMxfp4": 3}
    experts = {i for node in model.graph.node if node.op_type in first for i in node.input[first[node.op_type]:]}
    embed = {node.input[0] for node in model.graph.node if node.op_type == "Gather"} & set(size)
    cfg = m.config
    e = sum(size[n] for n in experts if n in size)
    emb = sum(size[n] for n in embed)
    dense = sum(size.values()) - e - emb
    per_token = e * cfg.num_experts_per_tok / cfg.num_local_experts + dense + emb / cfg.vocab_size
    return {"expert_bytes": e, "dense_bytes": dense, "embedding_bytes": emb, "per_token": per_token}


def fmt_gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--work", type=Path, default=Path("/tmp/gptoss-bench/engines"))
    p.add_argument("--configs", nargs="+", default=["mxfp4:4bit", "int4:4bit"],
                   help="engines to measure, EXPERTS:DENSE (experts mxfp4|float|int8|int4, dense float|4bit)")
    p.add_argument("--dense", default="float", help=argparse.SUPPRESS)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--max-positions", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--verify", default="sizes", help="engine verification at load (full|sizes)")
    p.add_argument("--keep-engines", action="store_true")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--engine", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        print(json.dumps(PHASES[a.phase](a)))
        return 0

    if not (a.checkpoint / "config.json").exists():
        print(f"writing the synthetic checkpoint {a.checkpoint} (gptoss-edge make-checkpoint)", flush=True)
        subprocess.run([sys.executable, "-m", "gptoss_edge.cli", "make-checkpoint", str(a.checkpoint),
                        "--preset", "gpt-oss-20b"], check=True)
    ckpt_bytes = sum(f.stat().st_size for f in a.checkpoint.rglob("*.safetensors"))
    print(f"checkpoint {a.checkpoint}: {ckpt_bytes / GiB:.2f} GiB")
    bw = run_phase("bandwidth", [])["bytes_per_s"]
    print(f"baseline: memory read bandwidth {bw / 1e9:.1f} GB/s")
    common = ["--checkpoint", str(a.checkpoint), "--prefill", str(a.prefill),
              "--decode", str(a.decode), "--max-positions", str(a.max_positions), "--verify", a.verify]
    if a.threads:
        common += ["--threads", str(a.threads)]
    cfg = load_config(a.checkpoint)
    rows = []
    for spec in a.configs:
        mode, _, dense = spec.partition(":")
        dense = dense or "float"
        engine = a.work / f"20b-{mode}-{dense}"
        a.work.mkdir(parents=True, exist_ok=True)
        free, need = shutil.disk_usage(a.work).free, estimate_engine_bytes(cfg, mode, dense)
        row = {"experts": f"{mode}/{dense}"}
        rows.append(row)
        if need > free - 5 * GiB:
            row["compile"] = {"error": f"skipped: engine ~{need / GiB:.0f} GiB, disk free {free / GiB:.0f} GiB"}
            print(f"[{spec}] {row['compile']['error']}", flush=True)
            continue
        print(f"[{spec}] compiling -> {engine} (engine ~{need / GiB:.1f} GiB, disk free "
              f"{free / GiB:.0f} GiB)", flush=True)
        c = run_phase("compile", [*common, "--engine", str(engine), "--mode", mode, "--dense", dense])
        row["compile"] = c
        print(f"[{spec}] compile: {json.dumps(c)}", flush=True)
        if "error" not in c:
            row["bytes"] = bpt = bytes_per_token(engine)
            avail = _mem_available()
            # Resident weights: experts + dense; of the embedding table only the rows used.
            need = bpt["expert_bytes"] + bpt["dense_bytes"]
            if need > avail - 2 * GiB:
                row["serve"] = {"error": f"skipped: weights {need / GiB:.1f} GiB > free RAM "
                                         f"{avail / GiB:.1f} GiB - 2 GiB"}
            else:
                row["serve"] = run_phase("serve", [*common, "--engine", str(engine)])
            print(f"[{spec}] serve: {json.dumps(row['serve'])}", flush=True)
            if "decode_tok_s" in row["serve"]:
                ceiling = bw / bpt["per_token"]
                row["serve"]["ceiling_tok_s"] = ceiling
        if not a.keep_engines:
            shutil.rmtree(engine, ignore_errors=True)
    print_table(rows, a, bw)
    return 0


def estimate_engine_bytes(cfg, experts: str, dense: str) -> int:
    """Engine size from the config and the format registry (compiler/formats.py): experts and
    q/k/v/o + lm_head at their formats' bytes per weight; embedding float32 (upper bound)."""
    from gptoss_edge.compiler import formats
    h, i, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    expert_params = cfg.num_hidden_layers * cfg.num_local_experts * 3 * h * i
    per_expert_weight = formats.expert(experts).bytes_per_param
    dense_params = cfg.num_hidden_layers * 2 * h * (cfg.q_size + cfg.kv_size) + v * h
    per_dense_weight = formats.dense(dense).bytes_per_param
    return int(expert_params * per_expert_weight + dense_params * per_dense_weight + v * h * 4)


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def print_table(rows: list[dict], a: argparse.Namespace, bw: float) -> None:
    print(f"\n{a.checkpoint.name} (synthetic), ONNX Runtime CPU, {os.cpu_count()} CPUs, "
          f"memory bandwidth {bw / 1e9:.1f} GB/s, prefill {a.prefill}, decode {a.decode}")
    head = ("experts/dense", "compile s", "compile peak RSS (anon) GiB", "engine GiB", "load s",
            "prefill tok/s", "decode tok/s", "decode/ceiling", "serve peak RSS (anon) GiB")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        c, s = r.get("compile", {}), r.get("serve", {})
        ratio = (f"{s['decode_tok_s'] / s['ceiling_tok_s']:.2f} (ceiling {s['ceiling_tok_s']:.1f})"
                 if "decode_tok_s" in s else "-")
        cells = [r["experts"], f"{c.get('seconds', 0):.0f}" if "seconds" in c else c.get("error", "-"),
                 f"{fmt_gib(c.get('peak_rss'))} ({fmt_gib(c.get('peak_anon'))})",
                 fmt_gib(c.get("engine_bytes")),
                 f"{s['load_s']:.1f}" if "load_s" in s else s.get("error", "-"),
                 f"{s['prefill_tok_s']:.1f}" if "prefill_tok_s" in s else "-",
                 f"{s['decode_tok_s']:.2f}" if "decode_tok_s" in s else "-", ratio,
                 f"{fmt_gib(s.get('peak_rss'))} ({fmt_gib(s.get('peak_anon'))})"]
        print(" | ".join(cells))
    print("targets: compile peak <= 3 GiB; serving peak <= 14 GiB with int4 experts")


if __name__ == "__main__":
    sys.exit(main())
