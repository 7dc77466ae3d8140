"""Shared by the TensorRT-path tests: a tiny engine compiled for the tensorrt target, and the
marker for tests of the machine-without-TensorRT behaviour (skipped where TensorRT is present,
since there the same commands go on to build and run)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gptoss_edge.cli import main as cli_main
from gptoss_edge.compiler.config import preset
from gptoss_edge.trt_env import tensorrt_available

CFG = preset("tiny")
POSITIONS = 512

without_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here: the "
                                      "no-TensorRT messages are not reachable")


def compile_trt_engine(root: Path, name: str, *extra: str) -> Path:
    """Tiny synthetic checkpoint -> tensorrt engine dir (fp32 unless `extra` says otherwise)."""
    from gptoss_edge.compiler.synthetic import write_checkpoint

    ckpt = root / "ckpt"
    if not ckpt.exists():
        write_checkpoint(ckpt, CFG, "hf", 3)
    out = root / name
    argv = ["compile", str(ckpt), "-o", str(out), "--target", "tensorrt", "--max-positions", str(POSITIONS),
            "--max-batch", "3", "--max-step-tokens", "256", "--no-progress", *extra]
    assert cli_main(argv) == 0
    return out
