"""Open a compiled engine directory for serving: KV slots sized from the memory budget, the
backend its manifest's target names (files verified against the manifest hashes on load), the
tokenizer its manifest names, and the embedded default model's engine when none is named."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from gptoss_edge.compiler.engine_dir import EngineManifest, load_manifest
from gptoss_edge.runtime.backend import Backend
from gptoss_edge.runtime.kv import slots_in_budget


class EngineOpenError(ValueError):
    """An engine directory that cannot be served; the message names the file or option."""


@dataclasses.dataclass(frozen=True)
class EngineLimits:
    max_slots: int = 8             # most sequences at once (before --max-memory)
    max_context: int = 4096        # tokens per sequence
    max_step_tokens: int = 256     # prefill chunk
    max_memory: int | None = None  # KV budget in bytes


@dataclasses.dataclass
class OpenedEngine:
    backend: Backend
    tokenizer: Any | None
    name: str
    manifest: EngineManifest


def kv_slots(manifest: EngineManifest, limits: EngineLimits) -> int:
    """Slots that fit the KV budget (each slot budgeted at the full context)."""
    from gptoss_edge.compiler.compile import kv_bytes
    try:
        return slots_in_budget(kv_bytes(manifest.config, limits.max_context), limits.max_context,
                               limits.max_slots, limits.max_memory)
    except ValueError as e:
        raise EngineOpenError(str(e)) from None


def open_engine(engine_dir: Path | None, limits: EngineLimits = EngineLimits()) -> OpenedEngine:
    path = Path(engine_dir) if engine_dir is not None else default_engine_dir()
    manifest = load_manifest(path, verify="none")          # cheap: config for the slot budget
    slots = kv_slots(manifest, limits)
    if manifest.target != "onnxruntime":
        raise EngineOpenError(f"{path}/manifest.json: target {manifest.target!r} cannot be served "
                              f"on this machine (supported here: onnxruntime)")
    from gptoss_edge.runtime.ort_backend import OrtBackend
    backend = OrtBackend(path, max_slots=slots, max_context=limits.max_context,
                         max_step_tokens=limits.max_step_tokens, verify=True)
    return OpenedEngine(backend, open_tokenizer(backend.manifest), model_name(backend.manifest),
                        backend.manifest)


def open_tokenizer(manifest: EngineManifest):
    """The engine's tokenizer, or None (token ids only) when its vocabulary does not fit the
    model's (e.g. a synthetic tiny checkpoint compiled with the default o200k entry)."""
    from gptoss_edge.runtime.tokenizer import load_tokenizer

    tok = load_tokenizer(dict(manifest.tokenizer), base_dir=manifest.path)
    if tok.vocab_size > manifest.config.vocab_size:
        print(f"warning: {manifest.path}: tokenizer has {tok.vocab_size} ids, the model "
              f"{manifest.config.vocab_size}; serving token ids only", file=sys.stderr)
        return None
    return tok


def model_name(manifest: EngineManifest) -> str:
    return manifest.path.resolve().name


def cache_root() -> Path:
    return Path(os.environ.get("GPTOSS_EDGE_CACHE") or Path.home() / ".cache" / "gptoss-edge")


def default_engine_dir() -> Path:
    """Engine dir of the embedded default model (issue 6), compiled on first use and cached
    under $GPTOSS_EDGE_CACHE (default ~/.cache/gptoss-edge), keyed by the model files' hash so
    a regenerated model is recompiled. GPTOSS_EDGE_DEFAULT_ENGINE=DIR overrides it. The compile
    carries the model's tokenizer.json into the engine (compiler/compile.py engine_tokenizer)."""
    env = os.environ.get("GPTOSS_EDGE_DEFAULT_ENGINE")
    if env:
        return Path(env)
    try:
        from gptoss_edge.models import default_model_dir
        src = default_model_dir()
    except (ImportError, FileNotFoundError) as e:
        raise EngineOpenError(f"no ENGINE_DIR given and the embedded default model is not "
                              f"available ({e}); pass an engine dir") from None
    digest = hashlib.sha256()
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        digest.update(f.name.encode() + f.read_bytes())
    engine = cache_root() / "engines" / f"default-{digest.hexdigest()[:16]}"
    if not (engine / "manifest.json").is_file():
        from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
        print(f"compiling the default model into {engine} (once) ...", file=sys.stderr)
        compile_checkpoint(src, engine, CompileOptions(target="onnxruntime",
                                                       max_positions=EngineLimits().max_context
                                                       + EngineLimits().max_step_tokens))
    return engine
