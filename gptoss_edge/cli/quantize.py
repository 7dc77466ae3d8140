"""`gptoss-edge quantize IN_DIR OUT_DIR`: MXFP4-quantize an unquantized Hugging Face gpt-oss
checkpoint into the released layout (compiler/quantize.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gptoss_edge.compiler import quantize as Q


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="MXFP4-quantize the experts of an HF gpt-oss checkpoint (released layout)",
        description=Q.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("in_dir", type=Path, help="unquantized checkpoint (config.json + *.safetensors)")
    p.add_argument("out_dir", type=Path, help="new directory for the released-layout checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        info = Q.quantize_checkpoint(args.in_dir, args.out_dir)
    except Q.QuantizeError as e:
        raise SystemExit(f"gptoss-edge quantize: {e}") from None
    print(f"wrote {info['out']}")
    return 0
