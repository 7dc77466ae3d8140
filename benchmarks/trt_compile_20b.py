"""Benchmark (figures only, asserts nothing): compile a full-size gpt-oss-20b checkpoint with
`--target tensorrt` (no TensorRT needed) and compare the engine's weight bytes with `plan`.

    python benchmarks/trt_compile_20b.py [--checkpoint /tmp/gptoss-bench/gpt-oss-20b]
        [--precision fp16] [--dense 4bit] [--dense-format mxfp4] [--work /tmp/trt-bench] [--keep]

Prints wall time, peak RSS of the compile (its own subprocess), file sizes, and the plan's
weights + RoPE tables against the lowered graph's bytes. The engine (~12 GB with 4-bit dense) is
deleted afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

GB = 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="/tmp/gptoss-bench/gpt-oss-20b")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--dense", default="4bit")
    ap.add_argument("--dense-format", default="mxfp4")
    ap.add_argument("--context", type=int, default=8192, help="--max-positions of the engine")
    ap.add_argument("--work", default="/tmp/trt-bench")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    out = Path(a.work) / "engine-20b"
    code = f"""
import json, resource, time
from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
t = time.monotonic()
s = compile_checkpoint({a.checkpoint!r}, {str(out)!r}, CompileOptions(target="tensorrt", precision={a.precision!r},
    dense={a.dense!r}, dense_format={a.dense_format!r}, max_positions={a.context}), show_progress=False)
print(json.dumps({{"seconds": time.monotonic() - t, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "files": {{n: e.size for n, e in s.manifest.files.items()}}, "weight_bytes": s.manifest.target_config["weight_bytes"]}}))
"""
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode:
        print(res.stderr[-4000:], file=sys.stderr)
        return 1
    r = json.loads(res.stdout.strip().splitlines()[-1])
    from gptoss_edge.compiler import plan as P
    from gptoss_edge.compiler.config import load_config
    cfg = load_config(a.checkpoint)
    p = P.memory_plan(cfg, target="tensorrt", context=a.context, batch=1, dense=a.dense,
                      dense_format=a.dense_format, precision=a.precision)
    planned = p.total("weights") + next(i.bytes for i in p.items if i.kind == "RoPE tables")
    print(f"compile --target tensorrt --precision {a.precision} --dense {a.dense} ({a.dense_format}), "
          f"{a.context} positions")
    print(f"  wall           {r['seconds']:.0f} s (driver {time.monotonic() - t0:.0f} s)")
    print(f"  peak RSS       {r['peak_rss'] / 2**30:.2f} GiB")
    for name, size in sorted(r["files"].items()):
        print(f"  file           {name:<22} {size / GB:8.3f} GB")
    print(f"  graph weights  {r['weight_bytes'] / GB:.4f} GB; plan weights + RoPE {planned / GB:.4f} GB "
          f"(difference {r['weight_bytes'] - planned:+.0f} bytes)")
    if not a.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
