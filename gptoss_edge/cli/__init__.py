"""`gptoss-edge`: compile gpt-oss checkpoints into TensorRT / ONNX Runtime engines and serve
them over gRPC. One module of this package per group of sub-commands."""
from __future__ import annotations

import argparse
import importlib
import sys

from gptoss_edge import __version__

DESCRIPTION = """Compile OpenAI gpt-oss checkpoints (MXFP4 experts kept 4-bit) into engine
directories for ONNX Runtime (CPU) or TensorRT, and serve them over gRPC.

typical use:
  gptoss-edge compile CHECKPOINT -o ENGINE_DIR --target onnxruntime
  gptoss-edge build-engine ENGINE_DIR           (tensorrt engines, on the device)
  gptoss-edge serve ENGINE_DIR                  (no ENGINE_DIR: the embedded default model)
  gptoss-edge chat "What does json.dumps do?"
  gptoss-edge plan gpt-oss-20b --target tensorrt --context 8192
"""

# Modules that contribute sub-commands, in the order `--help` lists them.
COMMAND_MODULES = [
    "gptoss_edge.cli.serve",        # serve, chat, bench
    "gptoss_edge.cli.compile",      # compile
    "gptoss_edge.cli.trt",          # build-engine, selftest
    "gptoss_edge.cli.generate",     # generate
    "gptoss_edge.cli.plan",         # plan
    "gptoss_edge.cli.checkpoint",   # make-checkpoint, check-checkpoint
    "gptoss_edge.cli.quantize",     # quantize
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptoss-edge", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gptoss-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
