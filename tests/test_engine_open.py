"""Opening engine dirs for serving: slot budget, verification, tokenizer fallback, and the
default-engine hook (compile once, then cached)."""
from __future__ import annotations

import dataclasses
import sys
import types

import pytest

from gptoss_edge.compiler.config import preset
from gptoss_edge.engine_dir import EngineDirError
from gptoss_edge.compiler.synthetic import write_checkpoint
from gptoss_edge.runtime.engine import opener as ed


def test_open_engine_sizes_slots_from_memory_budget(tiny_engine):
    from gptoss_edge.engine_dir import load_manifest
    cfg = load_manifest(tiny_engine, verify=False).config
    # float32 K+V per token per layer; full layers x 256 tokens + window layers x a fixed window
    layer = 2 * cfg.num_key_value_heads * cfg.head_dim * 4
    full = sum(not cfg.is_sliding(i) for i in range(cfg.num_hidden_layers))
    window = layer * (cfg.num_hidden_layers - full) * cfg.sliding_window
    per_slot = layer * full * 256 + window
    # prefix reuse off: the KV cache alone
    limits = ed.EngineLimits(max_slots=8, max_context=256, max_step_tokens=32,
                             max_memory=3 * per_slot + 100, saved_prefixes=0)
    engine = ed.open_engine(tiny_engine, limits)
    assert engine.backend.info.max_slots == 3
    engine.backend.close()
    # prefix reuse on (default): each slot also keeps up to 4 copies of its window buffers
    with_copies = dataclasses.replace(limits, saved_prefixes=4, max_memory=2 * (per_slot + 4 * window) + 100)
    assert ed.open_engine(tiny_engine, with_copies).backend.info.max_slots == 2
    no_copies = dataclasses.replace(with_copies, saved_prefixes=0)
    assert ed.open_engine(tiny_engine, no_copies).backend.info.max_slots == no_copies.max_memory // per_slot
    assert engine.name == "tiny" and engine.tokenizer is None     # o200k entry, 489-id model
    with pytest.raises(ed.EngineOpenError, match="holds no KV slot"):
        ed.open_engine(tiny_engine, dataclasses.replace(limits, max_memory=1000))


def test_open_engine_refuses_tampered_engine(tiny_engine, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_engine, copy)
    victim = next(p for p in copy.iterdir() if p.name != "manifest.json" and p.is_file())
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(EngineDirError, match=victim.name):
        ed.open_engine(copy, ed.EngineLimits(max_slots=1, max_context=128, max_step_tokens=32))


def test_default_engine_is_compiled_once_and_cached(tmp_path, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "default", preset("tiny"), "hf", 1)
    monkeypatch.setitem(sys.modules, "gptoss_edge.models",
                        types.SimpleNamespace(default_model_dir=lambda: ckpt))
    monkeypatch.setenv("GPTOSS_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTOSS_EDGE_DEFAULT_ENGINE", raising=False)
    first = ed.default_engine_dir()
    assert (first / "manifest.json").is_file() and first.parent == tmp_path / "cache" / "engines"
    stamp = (first / "manifest.json").stat().st_mtime_ns
    assert ed.default_engine_dir() == first
    assert (first / "manifest.json").stat().st_mtime_ns == stamp      # not recompiled
    monkeypatch.setenv("GPTOSS_EDGE_DEFAULT_ENGINE", str(tmp_path / "elsewhere"))
    assert ed.default_engine_dir() == tmp_path / "elsewhere"
