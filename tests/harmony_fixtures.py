"""Shared fixtures for the tokenizer / harmony tests: our tokenizers and the openai-harmony oracle.

openai-harmony 0.0.8 loads o200k_base from the directory in TIKTOKEN_ENCODINGS_BASE (file
`o200k_base.tiktoken`, plain text) instead of downloading it; we write that file from bpe-openai's
copy after our own hash check, so the oracle runs offline on the same verified bytes.
"""
from __future__ import annotations

import os

import pytest

from gptoss_edge.runtime.tokens.tokenizer import load_tokenizer, write_tiny_tokenizer
from gptoss_edge.runtime.tokens.o200k import packaged_vocab_path, read_verified_vocab


@pytest.fixture(scope="session")
def o200k():
    return load_tokenizer({"kind": "o200k_harmony"})


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    return load_tokenizer(write_tiny_tokenizer(directory, 512), directory)


@pytest.fixture(scope="session")
def harmony_encoding(tmp_path_factory):
    oh = pytest.importorskip("openai_harmony")
    enc_dir = tmp_path_factory.mktemp("tiktoken_encodings")
    (enc_dir / "o200k_base.tiktoken").write_bytes(read_verified_vocab(packaged_vocab_path()))
    old = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(enc_dir)
    try:
        return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if old is None:
            del os.environ["TIKTOKEN_ENCODINGS_BASE"]
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = old


def encode_script(tokenizer, *parts: str) -> list[int]:
    """Token ids for a scripted model output: '<|name|>' parts are special tokens, others text."""
    ids: list[int] = []
    for part in parts:
        if part.startswith("<|") and part.endswith("|>"):
            ids.append(tokenizer.special_id(part))
        else:
            ids += tokenizer.encode(part)
    return ids
