"""Regenerate the checked-in Python stubs from protos/ (source of truth for the wire).

    python protos/generate.py            # writes gptoss_edge/v1/*_pb2*.py, gptoss_edge/kserve/...
    python protos/generate.py --out DIR  # writes into DIR instead (the test compares the two)

Stubs are checked in (no build hook needed to install); tests/test_protos.py regenerates them
into a temp dir and fails if they differ, so an edited .proto without regenerated stubs is caught.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PROTO_FILES = ["gptoss_edge/v1/llm.proto", "gptoss_edge/kserve/grpc_service.proto"]


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) for every proto; returns the files written."""
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in PROTO_FILES:
        rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
                          f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
                          str(PROTO_ROOT / rel)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {rel} (exit {rc})")
    return [out_dir / name for name in stub_names()]


def stub_names() -> list[str]:
    """Relative paths of the generated stubs (three per proto)."""
    stems = [rel[: -len(".proto")] for rel in PROTO_FILES]
    return [s + suffix for s in stems for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO_ROOT)
    args = ap.parse_args()
    for p in generate(args.out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
