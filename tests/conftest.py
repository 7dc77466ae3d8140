from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """The harmony-aware byte-level BPE that `make-checkpoint --preset tiny` writes."""
    from gptoss_edge.runtime.tokenizer import load_tokenizer, make_tiny_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    make_tiny_tokenizer(512).save(str(path))
    return load_tokenizer({"kind": "hf", "file": str(path)})
