"""`gptoss-edge` command line: one sub-command per module, each module exposes
`register(subparsers)` which adds its parser and sets `func` (args -> exit code)."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands (imported lazily so `--help` stays fast).
COMMAND_MODULES = [
    "gptoss_edge.runtime.commands",
    "gptoss_edge.compiler.cli_checkpoint",
    "gptoss_edge.cmd_compile",
    "gptoss_edge.cmd_generate",
    "gptoss_edge.compiler.plan",
    "gptoss_edge.compiler.quantize",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptoss-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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
