#!/usr/bin/env python3
"""Tier-2 GPU check of the gptoss-edge CUDA kernels: ONE command, under 5 minutes on one GPU.

    python3 plugins/gpu_check.py RESULTS_DIR [--arch native] [--quick] [--skip-bench]

The first line printed says what it needs and what it found (python, numpy, nvcc, driver, GPU and
compute capability, CUDA runtime, TensorRT library and python module). Then:
1. the C-ABI kernel library: built with nvcc into --build-dir (default build/gpu_check, never
   inside RESULTS_DIR) or, on a machine without nvcc, the one already there (built elsewhere with
   `--build-only --arch sm_XX` and carried along; refused if the kernel sources changed since),
2. every kernel against the numpy reference over plugins/gpucheck/cases.py, outputs poisoned with
   NaN before each launch,
3. benchmarks (cold L2): device copy bandwidth (the peak), MoE decode effective bandwidth at
   1/4/16/64 tokens for 20b and 120b expert counts as a fraction of that peak (GEMV, tiled and
   MMA paths compared from 17 tokens on), MoE 512-token prefill TFLOP/s, Gemm4bit lm_head GEMV
   bandwidth and 512-row TFLOP/s, attention decode bandwidth,
4. RESULTS_DIR/results.json and results.md; exit code 0 all passed, 1 a case failed, 2 no usable
   GPU / library, 3 numpy missing.
Exact commands for a prebuilt library: plugins/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_BUILD = ROOT / "build" / "gpu_check"
sys.path.insert(0, str(HERE))

from gpucheck import build as build_mod  # noqa: E402  (standard library only, like env)
from gpucheck import env as env_mod  # noqa: E402


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_nvcc() -> str | None:
    for cand in (shutil.which("nvcc"), os.environ.get("CUDA_HOME", "") + "/bin/nvcc", "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


def cuda_home(nvcc: str) -> Path:
    for h in (os.environ.get("CUDA_HOME"), str(Path(nvcc).resolve().parent.parent), "/usr/local/cuda"):
        if h and (Path(h) / "include" / "cuda_runtime_api.h").exists():
            return Path(h)
    return Path(nvcc).resolve().parent.parent


def run_cases(runner, records: list, quick: bool, cases_mod) -> None:
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
            lost = runner.cuda.context_error()
            if lost:  # a kernel fault is sticky: every later call would fail with it, so stop here
                log(f"CUDA context lost after {op} {c.name} ({lost}): remaining cases not run")
                records.append({"op": op, "case": "(remaining cases)", "path": "-", "ok": False,
                                "error": f"not run: CUDA context lost after '{c.name}': {lost}"})
                return


def run_benchmarks(cuda, kernels, bench_records: list, fp16_peak_tflops: float | None) -> None:
    """fp16_peak_tflops: the GPU's dense fp16 tensor peak (fp32 accumulate), from its data sheet;
    CUDA does not report it, so it is given on the command line to rate the GEMMs against."""
    from gpucheck.bench import Bench

    b = Bench(cuda, kernels)
    peak = b.peak_bandwidth()
    bench_records.append(peak)
    log(f"peak (device copy): {peak['GB_per_s']:.0f} GB/s")
    p = peak["GB_per_s"]
    steps = [
        lambda: b.moe(32, 4, 2880, 2880, (1, 4, 16, 64), 512, p),
        lambda: b.moe(128, 4, 2880, 2880, (1, 16, 64), 512, p),
        lambda: [b.gemm(1, 2880, 201088, p), b.gemm(512, 2880, 4096, p, path="tiled"),
                 b.gemm(512, 2880, 4096, p, path="mma"), b.gemm(1, 2880, 4096, p, fmt="int4")],
        lambda: [b.attention(1, 8191, 0, 8192, p), b.attention(8, 4095, 0, 4096, p),
                 b.attention(1, 4096, 128, 128, p), b.attention(16, 4096, 128, 128, p)],
    ]
    for step in steps:
        try:
            for r in step():
                if fp16_peak_tflops and "TFLOP_per_s" in r:
                    r["fraction_of_fp16_peak"] = r["TFLOP_per_s"] / fp16_peak_tflops
                bench_records.append(r)
                frac = f" = {r['fraction_of_peak']:.0%} of peak" if "fraction_of_peak" in r else ""
                bw = f"{r['effective_GB_per_s']:.0f} GB/s{frac}" if "effective_GB_per_s" in r else ""
                tf = f", {r['TFLOP_per_s']:.2f} TFLOP/s" if "TFLOP_per_s" in r else ""
                tf += f" = {r['fraction_of_fp16_peak']:.1%} of fp16 peak" if "fraction_of_fp16_peak" in r else ""
                log(f"bench {r['bench']} [{r.get('path', '')}]: {r['ms'] * 1e3:.1f} us, {bw}{tf}")
        except Exception as e:  # noqa: BLE001
            bench_records.append({"bench": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            log(f"bench error: {e}")


def write_results(out: Path, meta: dict, records: list, bench: list) -> None:
    (out / "results.json").write_text(json.dumps({"meta": meta, "cases": records, "bench": bench}, indent=1))
    lines = [f"# gptoss-edge kernels on {meta['gpu']}", "", env_mod.summary(meta["env"]), "",
             f"reference: {meta['reference']}; attention: {meta['attention_reference']}; CUDA runtime/driver "
             f"{meta['cuda']}; total {meta['seconds']:.0f} s", "",
             "| op | case | path | ok | max abs err | output scale | bad / n |", "|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['case']} | {r['path']} | **ERROR** | {r['error'][:80]} | | |")
        else:
            lines.append(f"| {r['op']} | {r['case']} | {r['path']} | {'yes' if r['ok'] else '**NO**'} | "
                         f"{r['max_abs_err']:.3g} | {r['ref_max_abs']:.3g} | {r['n_bad']} / {r['n']} |")
    lines += ["", "| benchmark | path | time | GB/s | fraction of copy peak | TFLOP/s | of fp16 peak |",
              "|---|---|---|---|---|---|---|"]
    for r in bench:
        if "error" in r:
            lines.append(f"| error | | {r['error'][:100]} | | | | |")
            continue
        gbs = r.get("effective_GB_per_s", r.get("GB_per_s"))
        frac, tf, tf_frac = r.get("fraction_of_peak"), r.get("TFLOP_per_s"), r.get("fraction_of_fp16_peak")
        lines.append(f"| {r['bench']} | {r.get('path', '')} | {r['ms'] * 1e3:.1f} us | {gbs:.0f} | "
                     f"{'' if frac is None else f'{frac:.0%}'} | {'' if tf is None else f'{tf:.2f}'} | "
                     f"{'' if tf_frac is None else f'{tf_frac:.1%}'} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def fail(out: Path | None, code: int, message: str, meta: dict) -> int:
    """One clear line (no traceback), and results.json saying why when there is a results dir."""
    log(message)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"meta": {**meta, "error": message}, "cases": [], "bench": []},
                                                     indent=1))
    return code


def choose_library(args, nvcc: str | None) -> tuple[Path | None, str | None]:
    """(library to use or None to build it, why not usable)."""
    if args.lib:
        return args.lib.resolve(), None
    if nvcc and not args.use_prebuilt:
        return None, None
    prebuilt = args.build_dir / build_mod.LIB_NAME
    if not prebuilt.exists():
        return None, (f"no nvcc here and no prebuilt {prebuilt}: on a machine with nvcc run "
                      f"`python3 plugins/gpu_check.py --build-only --arch sm_XX` and carry {args.build_dir}")
    stale = build_mod.stale_reason(prebuilt, ROOT)
    if stale and not args.allow_stale:
        return None, f"prebuilt {prebuilt} is stale ({stale}): rebuild it with --build-only (or pass --allow-stale)"
    return prebuilt.resolve(), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir", type=Path, nargs="?", help="where results.json/results.md go (not with --build-only)")
    ap.add_argument("--arch", default="native", help="nvcc -arch value (default: this GPU; sm_XX with --build-only)")
    ap.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD, help=f"library build folder (default {DEFAULT_BUILD})")
    ap.add_argument("--build-only", action="store_true", help="build the library into --build-dir and stop (no GPU needed)")
    ap.add_argument("--use-prebuilt", action="store_true", help="use the library in --build-dir even where nvcc exists")
    ap.add_argument("--allow-stale", action="store_true", help="accept a prebuilt library older than the sources")
    ap.add_argument("--lib", type=Path, help="use this libgptoss_edge_kernels.so (no build)")
    ap.add_argument("--cudart", help="libcudart.so to load (default: beside the library, else the toolkit's)")
    ap.add_argument("--quick", action="store_true", help="skip the 120b and 512-token correctness cases")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--fp16-peak-tflops", type=float, help="the GPU's dense fp16 tensor peak (data sheet; "
                    "e.g. 989 for H100 SXM) to rate the GEMM benchmarks against")
    ap.add_argument("--fallback-reference", action="store_true", help="use gpucheck/fallback_ref.py")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = args.results_dir
    pydeps = args.build_dir / "pydeps"  # numpy carried for a machine without it (plugins/README.md)
    if pydeps.is_dir():
        sys.path.insert(0, str(pydeps))

    nvcc = find_nvcc()
    lib, why = (None, None) if args.build_only else choose_library(args, nvcc)
    cudart = args.cudart or (build_mod.cudart_beside(lib) if lib else None)
    if not cudart:
        try:
            cudart = build_mod.find_cudart(cuda_home(nvcc) if nvcc else None)
        except RuntimeError:
            cudart = None
    env = env_mod.probe(nvcc, cudart)
    log(env_mod.summary(env))
    meta = {"env": env, "arch": args.arch, "host": platform.node()}

    if args.build_only:
        if not nvcc:
            return fail(None, 2, "gpu_check: --build-only needs nvcc (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)", meta)
        if args.arch == "native" and not env["gpu"]:
            return fail(None, 2, "gpu_check: no GPU here for -arch=native: give --arch sm_XX (the GPU's)", meta)
    elif out is None:
        return fail(None, 2, "gpu_check: RESULTS_DIR is required (except with --build-only)", meta)
    elif out.resolve() in (args.build_dir.resolve(), *args.build_dir.resolve().parents):
        return fail(None, 2, f"gpu_check: --build-dir {args.build_dir} must not be inside RESULTS_DIR {out}", meta)
    elif why:
        return fail(out, 2, f"gpu_check: {why}", meta)
    elif env["numpy"] is None:
        return fail(out, 3, "gpu_check: numpy is missing for this python (it computes inputs and references): "
                    f"install it, or carry it in {pydeps} (see plugins/README.md)", meta)
    elif not env["gpu"]:
        if lib:
            log(f"prebuilt library: using {lib} (cudart {cudart})")
        return fail(out, 2, f"gpu_check: no usable CUDA GPU ({env['gpu_why']})", meta)

    if lib is None:
        if not cudart:
            return fail(out, 2, "gpu_check: no libcudart found next to nvcc (give --cudart PATH)", meta)
        log(f"building the kernel library with {nvcc} -arch={args.arch} into {args.build_dir}")
        t0 = time.perf_counter()
        try:
            lib = build_mod.build_library(ROOT, args.build_dir, nvcc, str(Path(cudart).parent), args.arch)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return fail(out, 2, "gpu_check: kernel library build failed (nvcc output above)", meta)
        build_mod.write_build_info(lib, ROOT, args.arch, env["nvcc"])
        log(f"built {lib} in {time.perf_counter() - t0:.0f} s")
        if args.build_only:
            log(f"carry {args.build_dir} (library + its libcudart + build.json) to the GPU machine and run there: "
                f"python3 plugins/gpu_check.py RESULTS_DIR (plugins/README.md)")
            return 0
    else:
        log(f"using prebuilt {lib} (cudart {cudart})")
    too_old = env_mod.driver_too_old(env)
    if too_old:
        return fail(out, 2, f"gpu_check: {too_old}", meta)
    return run_all(args, out, lib, cudart, meta, t_start)


def run_all(args, out: Path, lib: Path, cudart: str, meta: dict, t_start: float) -> int:
    """Cases then benchmarks (numpy from here on)."""
    from gpucheck import cases as cases_mod
    from gpucheck.cuda_rt import Cuda, Kernels
    from gpucheck.refs import Reference

    out.mkdir(parents=True, exist_ok=True)
    try:
        cuda = Cuda(cudart)
    except (OSError, RuntimeError) as e:
        return fail(out, 2, f"gpu_check: no usable CUDA device through {cudart}: {e}", meta)
    kernels = Kernels(str(lib))
    ref = Reference(ROOT, force_fallback=args.fallback_reference)
    log(f"reference: {ref.name}" + (f" (project reference unavailable: {ref.error})" if ref.error else "")
        + f"; attention: {ref.attention_name}")
    meta.update({"gpu": meta["env"]["gpu"], "cuda": cuda.versions(), "reference": ref.name,
                 "reference_error": ref.error, "attention_reference": ref.attention_name,
                 "python": sys.version.split()[0]})

    records, bench = [], []
    try:
        run_cases(cases_mod.Runner(cuda, kernels, ref), records, args.quick, cases_mod)
        lost = cuda.context_error()
        if lost:
            log(f"benchmarks skipped: the CUDA context is unusable ({lost})")
        else:
            cuda.free_all()
            if not args.skip_bench:
                run_benchmarks(cuda, kernels, bench, args.fp16_peak_tflops)
    finally:
        meta["seconds"] = time.perf_counter() - t_start
        write_results(out, meta, records, bench)
    failed = [r for r in records if not r["ok"]]
    log(f"{len(records) - len(failed)}/{len(records)} cases passed in {meta['seconds']:.0f} s; "
        f"results in {out}/results.md and results.json")
    return 1 if failed or not records else 0


if __name__ == "__main__":
    sys.exit(main())
