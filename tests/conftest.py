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
