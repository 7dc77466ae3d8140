"""`gptoss-edge build-engine ENGINE_DIR` and `gptoss-edge selftest [ENGINE_DIR]`: the TensorRT
commands that run on the device (compiler/trt_build.py, gptoss_edge/selftest.py). Any failure
is one line on stderr, no traceback."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build-engine", help="build the TensorRT plan of a tensorrt engine dir on this device",
                       description="Build engine.plan for this GPU from an engine dir compiled with "
                                   "--target tensorrt (TensorRT, the plugin library and the GPU needed).")
    b.add_argument("engine_dir", type=Path)
    b.add_argument("--plugins", metavar="PATH", help="plugin library (default: $GPTOSS_EDGE_PLUGINS, "
                   "/opt/gptoss-edge/lib/libgptoss_edge_plugins.so, build/plugins/ of a checkout)")
    b.add_argument("--if-needed", action="store_true",
                   help="build only when the engine has no plan for this TensorRT, GPU and plugin library")
    b.add_argument("--weights-in-plan", action="store_true",
                   help="keep the 4-bit plugin weights inside the plan (more build memory; default: "
                        "loaded from model.onnx.data by the runtime)")
    b.set_defaults(func=run_build)

    s = sub.add_parser("selftest", help="check TensorRT on this device: facts, build, parity, speed",
                       description="Print driver/CUDA/TensorRT/GPU facts, build the default model (or "
                                   "ENGINE_DIR) for this GPU, compare TensorRT with the reference "
                                   "backend, measure TTFT and decode tok/s; exit 0 when all pass.")
    s.add_argument("engine_dir", nargs="?", type=Path, help="a tensorrt engine dir (default: the embedded model)")
    s.add_argument("--plugins", metavar="PATH", help="plugin library (as build-engine)")
    s.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="precision of the default model's engine (fp32: tight parity bounds)")
    s.add_argument("--report", type=Path, default=Path("gptoss-edge-selftest.json"), help="JSON report file")
    s.set_defaults(func=run_selftest)


def _errors():
    from gptoss_edge.compiler.trt_build import BuildError
    from gptoss_edge.cudart import CudaError
    from gptoss_edge.engine_dir import EngineDirError
    from gptoss_edge.runtime.engine.backend import BackendError
    from gptoss_edge.target_config import TargetConfigError
    from gptoss_edge.trt_env import TrtUnavailable
    return (BuildError, CudaError, EngineDirError, BackendError, TargetConfigError, TrtUnavailable, OSError,
            ValueError)


def run_build(args: argparse.Namespace) -> int:
    from gptoss_edge.compiler.trt_build import build_engine, ensure_plan
    try:
        if args.if_needed:
            ensure_plan(args.engine_dir, args.plugins)
        else:
            m = build_engine(args.engine_dir, args.plugins, weights_in_plan=args.weights_in_plan)
            print(f"{m.path}: engine.plan written and recorded in manifest.json")
    except _errors() as e:
        print(f"gptoss-edge build-engine: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_selftest(args: argparse.Namespace) -> int:
    from gptoss_edge.selftest import run_selftest as selftest
    try:
        report = selftest(args.engine_dir, plugins=args.plugins, precision=args.precision)
    except _errors() as e:
        report = {"ok": False, "error": str(e)}
        print(f"gptoss-edge selftest: error: {e}", file=sys.stderr)
    try:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}", file=sys.stderr)
    except OSError as e:
        print(f"gptoss-edge selftest: cannot write the report: {e}", file=sys.stderr)
    print("selftest: PASSED" if report["ok"] else "selftest: FAILED", file=sys.stderr)
    return 0 if report["ok"] else 1
