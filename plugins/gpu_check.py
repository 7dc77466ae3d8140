#!/usr/bin/env python3
"""Tier-2 GPU check of the gptoss-edge CUDA kernels: ONE command, under 5 minutes on one GPU.

    python3 plugins/gpu_check.py RESULTS_DIR [--arch native] [--quick] [--skip-bench]

Without nvcc on the GPU machine: build elsewhere with `--build-only --arch sm_90` (or the GPU's
arch) and run there with `--lib RESULTS_DIR/build/libgptoss_edge_kernels.so` (the machine still
needs the matching libcudart: `--cudart PATH`).

1. builds the C-ABI kernel library (nvcc, this GPU's arch) into RESULTS_DIR/build,
2. runs every kernel against the numpy reference (gptoss_edge.compiler.reference_kernels, or the
   fallback formulas of plugins/gpucheck/fallback_ref.py when that cannot be imported) over the
   shapes of plugins/gpucheck/cases.py, outputs poisoned with NaN before each launch,
3. benchmarks (cold L2): device copy bandwidth (the peak), MoE decode effective bandwidth at 1/4/16
   tokens for 20b and 120b expert counts as a fraction of that peak, MoE 512-token prefill
   TFLOP/s, Gemm4bit lm_head GEMV bandwidth and 512-row TFLOP/s, attention decode bandwidth,
4. writes RESULTS_DIR/results.json and RESULTS_DIR/results.md; exit code 1 if any case failed.
Needs: python3 with numpy, nvcc (CUDA >= 12.6), a CUDA GPU. No torch/cupy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from gpucheck import cases as cases_mod  # noqa: E402
from gpucheck.bench import Bench  # noqa: E402
from gpucheck.cuda_rt import Cuda, Kernels, build_library, find_cudart  # noqa: E402
from gpucheck.refs import Reference  # noqa: E402


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_nvcc() -> str:
    for cand in (shutil.which("nvcc"), os.environ.get("CUDA_HOME", "") + "/bin/nvcc", "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("gpu_check: nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")


def cuda_home(nvcc: str) -> Path:
    for h in (os.environ.get("CUDA_HOME"), str(Path(nvcc).resolve().parent.parent), "/usr/local/cuda"):
        if h and (Path(h) / "include" / "cuda_runtime_api.h").exists():
            return Path(h)
    return Path(nvcc).resolve().parent.parent


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (nvidia-smi unavailable)"


def run_cases(runner, records: list, quick: bool) -> None:
    plan = [("MoeMxfp4", runner.moe, cases_mod.MOE_CASES), ("Gemm4bit", runner.gemm, cases_mod.GEMM_CASES),
            ("SinkAttention", runner.attention, cases_mod.ATTN_CASES)]
    for op, fn, cases in plan:
        for c in cases:
            if quick and any(tag in c.name for tag in ("120b", "512")):
                continue
            t0 = time.perf_counter()
            try:
                recs = fn(c)
            except Exception as e:  # noqa: BLE001 - record and continue with the other cases
                recs = [{"op": op, "case": c.name, "path": "-", "ok": False, "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()}]
            for r in recs:
                records.append(r)
                status = "ok  " if r["ok"] else "FAIL"
                detail = r.get("error") or (f"max_err={r['max_abs_err']:.3g} (scale {r['ref_max_abs']:.3g}) "
                                            f"bad={r['n_bad']}/{r['n']} nan={r['n_nan']}")
                log(f"{status} {op:13s} {c.name} [{r['path']}] {detail} ({time.perf_counter() - t0:.1f} s)")


def run_benchmarks(cuda, kernels, bench_records: list) -> None:
    b = Bench(cuda, kernels)
    peak = b.peak_bandwidth()
    bench_records.append(peak)
    log(f"peak (device copy): {peak['GB_per_s']:.0f} GB/s")
    p = peak["GB_per_s"]
    steps = [
        lambda: b.moe(32, 4, 2880, 2880, (1, 4, 16), 512, p),
        lambda: b.moe(128, 4, 2880, 2880, (1, 16), 512, p),
        lambda: [b.gemm(1, 2880, 201088, p), b.gemm(512, 2880, 4096, p, path="tiled"),
                 b.gemm(512, 2880, 4096, p, path="mma"), b.gemm(1, 2880, 4096, p, fmt="int4")],
        lambda: [b.attention(1, 8191, 0, 8192, p), b.attention(8, 4095, 0, 4096, p),
                 b.attention(1, 4096, 128, 128, p), b.attention(16, 4096, 128, 128, p)],
    ]
    for step in steps:
        try:
            for r in step():
                bench_records.append(r)
                frac = f" = {r['fraction_of_peak']:.0%} of peak" if "fraction_of_peak" in r else ""
                bw = f"{r['effective_GB_per_s']:.0f} GB/s{frac}" if "effective_GB_per_s" in r else ""
                tf = f", {r['TFLOP_per_s']:.2f} TFLOP/s" if "TFLOP_per_s" in r else ""
                log(f"bench {r['bench']} [{r.get('path', '')}]: {r['ms'] * 1e3:.1f} us, {bw}{tf}")
        except Exception as e:  # noqa: BLE001
            bench_records.append({"bench": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            log(f"bench error: {e}")


def write_results(out: Path, meta: dict, records: list, bench: list) -> None:
    (out / "results.json").write_text(json.dumps({"meta": meta, "cases": records, "bench": bench}, indent=1))
    lines = [f"# gptoss-edge kernels on {meta['gpu']}", "",
             f"reference: {meta['reference']}; CUDA runtime/driver {meta['cuda']}; total {meta['seconds']:.0f} s", "",
             "| op | case | path | ok | max abs err | output scale | bad / n |", "|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['case']} | {r['path']} | **ERROR** | {r['error'][:80]} | | |")
        else:
            lines.append(f"| {r['op']} | {r['case']} | {r['path']} | {'yes' if r['ok'] else '**NO**'} | "
                         f"{r['max_abs_err']:.3g} | {r['ref_max_abs']:.3g} | {r['n_bad']} / {r['n']} |")
    lines += ["", "| benchmark | path | time | GB/s | fraction of peak | TFLOP/s |", "|---|---|---|---|---|---|"]
    for r in bench:
        if "error" in r:
            lines.append(f"| error | | {r['error'][:100]} | | | |")
            continue
        gbs = r.get("effective_GB_per_s", r.get("GB_per_s"))
        frac = r.get("fraction_of_peak")
        tf = r.get("TFLOP_per_s")
        lines.append(f"| {r['bench']} | {r.get('path', '')} | {r['ms'] * 1e3:.1f} us | {gbs:.0f} | "
                     f"{'' if frac is None else f'{frac:.0%}'} | {'' if tf is None else f'{tf:.2f}'} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--arch", default="native", help="nvcc -arch value (default: this GPU)")
    ap.add_argument("--quick", action="store_true", help="skip the 120b and 512-token correctness cases")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--fallback-reference", action="store_true", help="use gpucheck/fallback_ref.py")
    ap.add_argument("--lib", type=Path, help="use this prebuilt libgptoss_edge_kernels.so (no nvcc needed)")
    ap.add_argument("--cudart", help="path of libcudart.so (default: next to nvcc, else the loader path)")
    ap.add_argument("--build-only", action="store_true", help="build the library and stop (no GPU needed)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = args.results_dir
    (out / "build").mkdir(parents=True, exist_ok=True)

    nvcc = None if args.lib else find_nvcc()
    cudart = args.cudart or find_cudart(cuda_home(nvcc) if nvcc else None)
    if args.lib:
        lib = args.lib.resolve()
        log(f"using prebuilt {lib} (cudart {cudart})")
    else:
        log(f"building the kernel library with {nvcc} -arch={args.arch} (cudart {cudart})")
        t0 = time.perf_counter()
        lib = build_library(ROOT, out / "build", nvcc, str(Path(cudart).parent), args.arch)
        log(f"built {lib} in {time.perf_counter() - t0:.0f} s")
    if args.build_only:
        return 0
    try:
        cuda = Cuda(cudart)
    except (OSError, RuntimeError) as e:
        log(f"no usable CUDA device: {e}")
        (out / "results.json").write_text(json.dumps({"meta": {"error": str(e), "cudart": cudart}}, indent=1))
        return 2
    kernels = Kernels(str(lib))
    ref = Reference(ROOT, force_fallback=args.fallback_reference)
    log(f"reference: {ref.name}" + (f" (project reference unavailable: {ref.error})" if ref.error else ""))
    meta = {"gpu": gpu_name(), "cuda": cuda.versions(), "reference": ref.name, "reference_error": ref.error,
            "arch": args.arch, "host": platform.node(), "python": sys.version.split()[0]}

    records, bench = [], []
    try:
        run_cases(cases_mod.Runner(cuda, kernels, ref), records, args.quick)
        cuda.free_all()
        if not args.skip_bench:
            run_benchmarks(cuda, kernels, bench)
    finally:
        meta["seconds"] = time.perf_counter() - t_start
        write_results(out, meta, records, bench)
    failed = [r for r in records if not r["ok"]]
    log(f"{len(records) - len(failed)}/{len(records)} cases passed; results in {out}/results.md and results.json")
    return 1 if failed or not records else 0


if __name__ == "__main__":
    sys.exit(main())
