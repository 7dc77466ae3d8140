"""Shared fixtures. Oracle results are computed once per test session (session scope): every
parity test of every target compares against the same cached arrays."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # `import oracles` from test modules

import oracles  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> oracles.CheckpointPair:
    """The seed-0 tiny synthetic checkpoint, written in both released layouts."""
    return oracles.write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-seed0"), seed=0)


@pytest.fixture(scope="session")
def oracle_case(tiny_checkpoint) -> oracles.OracleCase:
    """HF (prompt logits + KV-cached greedy decode) and OpenAI logits for the standard batch."""
    return oracles.compute_oracle_case(tiny_checkpoint)


# ---- serving (runtime) -------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """The harmony-aware byte-level BPE that `make-checkpoint --preset tiny` writes."""
    from gptoss_edge.runtime.tokens.tokenizer import load_tokenizer, make_tiny_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    make_tiny_tokenizer(512).save(str(path))
    return load_tokenizer({"kind": "hf", "file": str(path)})


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory, tiny_tokenizer):
    """ONNX Runtime engine compiled from a synthetic tiny gpt-oss checkpoint (random weights,
    4 layers: window + full attention, 8 experts top-2), vocabulary sized to the tiny BPE."""
    import dataclasses

    from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
    from gptoss_edge.compiler.config import preset
    from gptoss_edge.compiler.synthetic import write_checkpoint

    root = tmp_path_factory.mktemp("engine")
    cfg = dataclasses.replace(preset("tiny"), vocab_size=tiny_tokenizer.vocab_size)
    write_checkpoint(root / "ckpt", cfg, "hf", 5)
    compile_checkpoint(root / "ckpt", root / "tiny", CompileOptions(
        target="onnxruntime", experts="float", max_positions=1024), show_progress=False)
    return root / "tiny"


def ort_backend(engine, **limits):
    """OrtBackend with one intra-op thread (CI has 2 shared cores; more threads only contend)."""
    from gptoss_edge.runtime.engine.ort_backend import OrtBackend
    return OrtBackend(engine, threads=1, **limits)


@pytest.fixture(scope="session")
def readme_tiny_engine(tmp_path_factory):
    """The tiny engine exactly as the README makes it, with the real CLI: `make-checkpoint
    --preset tiny` (model vocabulary 512, its tokenizer 489 ids) then `compile`."""
    import subprocess

    root = tmp_path_factory.mktemp("readme-tiny")
    cli = [sys.executable, "-m", "gptoss_edge.cli"]
    for args in (["make-checkpoint", str(root / "ckpt"), "--preset", "tiny"],
                 ["compile", str(root / "ckpt"), "-o", str(root / "engine"),
                  "--target", "onnxruntime", "--no-progress"]):
        done = subprocess.run(cli + args, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    return root / "engine"
