"""Benchmark (not a test): write a full-size synthetic gpt-oss-20b checkpoint, streaming.

    python benchmarks/make_checkpoint_20b.py [OUT] [--layout hf|original] [--seed S]

OUT defaults to /tmp/gptoss-bench/gpt-oss-20b (outside the repo) and must not exist. Prints
wall time, bytes written, throughput and the process's peak RSS, then re-opens the result and
validates every key/shape/dtype (headers only). Needs ~13.8 GB of free disk.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

from gptoss_edge.compiler.checkpoint import open_checkpoint
from gptoss_edge.cli.checkpoint import ProgressBar
from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.synthetic import checkpoint_bytes, write_checkpoint

DEFAULT_OUT = Path("/tmp/gptoss-bench/gpt-oss-20b")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--layout", default="hf", choices=["hf", "original"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = preset("gpt-oss-20b")
    need = checkpoint_bytes(cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.out.parent).free
    if free < need * 1.05:
        print(f"error: {args.out.parent} has {free / 1e9:.1f} GB free, need {need / 1e9:.1f} GB",
              file=sys.stderr)
        return 2
    print(f"writing gpt-oss-20b ({args.layout}, seed {args.seed}) to {args.out}: "
          f"{need / 1e9:.2f} GB of tensors, {free / 1e9:.0f} GB free", flush=True)

    bar = ProgressBar(sys.stderr, need)
    start = time.monotonic()
    try:
        write_checkpoint(args.out, cfg, args.layout, args.seed, progress=bar.update)
    finally:
        bar.close()
    wall = time.monotonic() - start
    written = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    files = sorted(p.name for p in args.out.rglob("*") if p.is_file())
    print(f"wall time      {wall:8.1f} s")
    print(f"bytes written  {written:,} ({written / 1e9:.2f} GB) in {len(files)} files: {', '.join(files)}")
    print(f"throughput     {written / wall / 1e6:8.0f} MB/s")
    print(f"peak RSS       {peak_rss_gib():8.2f} GiB (write)")

    t0 = time.monotonic()
    ckpt = open_checkpoint(args.out)
    ckpt.validate()
    print(f"validate       {time.monotonic() - t0:8.2f} s: {ckpt.layout}, {len(ckpt.stored_keys())} "
          f"tensors, all keys/shapes/dtypes as expected")
    print(f"peak RSS       {peak_rss_gib():8.2f} GiB (write + validate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
