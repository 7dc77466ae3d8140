"""The ONE way to open a compiled engine directory (serve, generate, bench, chat, selftest):
the backend is chosen from the manifest's target through a small registry, KV slots are sized
from the manifest's kv_layout under the memory budget, files are verified against the manifest
hashes, and the tokenizer the manifest names is loaded. With no directory, the embedded default
model's engine (compiled once, cached).

Backends (name -> which engine targets it runs):
  onnxruntime  OrtBackend: ONNX Runtime on CPU                          (target onnxruntime)
  tensorrt     TrtBackend: the engine's TensorRT plan on the GPU         (target tensorrt)
  reference    ReferenceBackend: onnx.reference + numpy kernels, exact   (target tensorrt)
"auto" picks by the manifest's target (AUTO below). A tensorrt engine under "auto" runs on
TensorRT when `tensorrt` is importable; otherwise opening fails with one line that names
`--backend reference` (never a silent fall back to a CPU evaluator thousands of times slower).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

from gptoss_edge.compiler.opset import DOMAIN, OPSET_VERSION
from gptoss_edge.engine_dir import FORMAT, SCHEMA_VERSION, EngineManifest, load_manifest
from gptoss_edge.runtime.engine.backend import Backend, BackendError, kv_layout_of
from gptoss_edge.runtime.engine.kv import slots_in_budget
from gptoss_edge.runtime.engine.prefix import MAX_SAVED


class EngineOpenError(ValueError):
    """An engine directory that cannot be served; the message names the file or option."""


@dataclasses.dataclass(frozen=True)
class EngineLimits:
    max_slots: int = 8             # most sequences at once (before --max-memory)
    max_context: int = 4096        # tokens per sequence
    max_step_tokens: int = 256     # prefill chunk
    max_memory: int | None = None  # KV budget in bytes
    saved_prefixes: int = MAX_SAVED  # window-buffer copies a slot keeps for prefix reuse (0: off)


@dataclasses.dataclass
class OpenedEngine:
    backend: Backend
    tokenizer: Any | None
    name: str
    manifest: EngineManifest


def _open_ort(path: Path, limits: EngineLimits, threads: int | None, verify) -> Backend:
    from gptoss_edge.runtime.engine.ort_backend import OrtBackend
    return OrtBackend(path, max_slots=limits.max_slots, max_context=limits.max_context,
                      max_step_tokens=limits.max_step_tokens, threads=threads, verify=verify)


def _open_reference(path: Path, limits: EngineLimits, threads: int | None, verify) -> Backend:
    from gptoss_edge.runtime.engine.reference_backend import ReferenceBackend
    return ReferenceBackend(path, max_slots=limits.max_slots, max_context=limits.max_context,
                            max_step_tokens=limits.max_step_tokens, verify=verify)


def _open_tensorrt(path: Path, limits: EngineLimits, threads: int | None, verify) -> Backend:
    from gptoss_edge.runtime.engine.trt_backend import open_trt
    return open_trt(path, limits, threads, verify)


# backend name -> (engine targets it runs, opener(path, limits, threads, verify))
BACKENDS: dict[str, tuple[frozenset[str], Callable[..., Backend]]] = {
    "onnxruntime": (frozenset({"onnxruntime"}), _open_ort),
    "tensorrt": (frozenset({"tensorrt"}), _open_tensorrt),
    "reference": (frozenset({"tensorrt"}), _open_reference),
}
# engine target -> backend used by "auto"
AUTO = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}
BACKEND_CHOICES = ("auto", *BACKENDS)


def kv_slots(manifest: EngineManifest, limits: EngineLimits) -> int:
    """Slots that fit the KV budget: each slot at its full context plus the window-buffer copies
    its saved prefixes keep (runtime/engine/prefix.py)."""
    try:
        kv = kv_layout_of(manifest)
        per_slot = kv.slot_bytes(limits.max_context) + limits.saved_prefixes * kv.window_copy_bytes
        return slots_in_budget(per_slot, limits.max_context, limits.max_slots, limits.max_memory)
    except (ValueError, BackendError) as e:
        raise EngineOpenError(str(e)) from None


def choose_backend(manifest: EngineManifest, backend: str = "auto") -> str:
    """The backend name that runs this engine, or EngineOpenError saying which would."""
    if backend == "auto":
        if manifest.target not in AUTO:
            raise EngineOpenError(f"{manifest.path}/manifest.json: no backend runs target {manifest.target!r}")
        name = AUTO[manifest.target]
        if name == "tensorrt":
            from gptoss_edge.trt_env import tensorrt_available
            if not tensorrt_available():
                raise EngineOpenError(f"{manifest.path}: a tensorrt engine, and TensorRT is not installed here; "
                                      f"pass --backend reference to run its graph on CPU (exact, slow)")
        return name
    if backend not in BACKENDS:
        raise EngineOpenError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    targets, _ = BACKENDS[backend]
    if manifest.target not in targets:
        runs = [b for b, (t, _) in BACKENDS.items() if manifest.target in t]
        raise EngineOpenError(f"{manifest.path}: backend {backend!r} does not run target "
                              f"{manifest.target!r} engines (use {' or '.join(runs) or 'none'})")
    return backend


def open_engine(engine_dir: Path | str | None, limits: EngineLimits = EngineLimits(), *,
                backend: str = "auto", threads: int | None = None, verify: bool | str = True,
                tokenizer: bool = True) -> OpenedEngine:
    """Open `engine_dir` (None: the embedded default model) for serving or generation."""
    path = Path(engine_dir) if engine_dir is not None else default_engine_dir()
    manifest = load_manifest(path, verify="none")          # cheap: target + kv_layout first
    name = choose_backend(manifest, backend)
    limits = dataclasses.replace(limits, max_slots=kv_slots(manifest, limits))
    try:
        opened = BACKENDS[name][1](path, limits, threads, verify)
    except BackendError as e:
        raise EngineOpenError(str(e)) from None
    m = getattr(opened, "manifest", manifest)
    return OpenedEngine(opened, open_tokenizer(m) if tokenizer else None, model_name(m), m)


def open_tokenizer(manifest: EngineManifest):
    """The engine's tokenizer, or None (token ids only) when its vocabulary does not fit the
    model's (e.g. a synthetic tiny checkpoint compiled with the default o200k entry)."""
    from gptoss_edge.runtime.tokens.tokenizer import load_tokenizer

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
    src, digest = default_model_source()
    engine = cache_root() / "engines" / f"default-{digest}"
    if not (engine / "manifest.json").is_file():
        from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
        print(f"compiling the default model into {engine} (once) ...", file=sys.stderr)
        compile_checkpoint(src, engine, CompileOptions(target="onnxruntime",
                                                       max_positions=EngineLimits().max_context
                                                       + EngineLimits().max_step_tokens))
    return engine


def default_model_source() -> tuple[Path, str]:
    """(embedded default model dir, 16-hex digest of its files and of the engine format this
    gptoss-edge writes): caches key on the digest, so an upgrade that changes the engine format
    recompiles the cached default engine instead of refusing it."""
    try:
        from gptoss_edge.models import default_model_dir
        src = default_model_dir()
    except (ImportError, FileNotFoundError) as e:
        raise EngineOpenError(f"no ENGINE_DIR given and the embedded default model is not "
                              f"available ({e}); pass an engine dir") from None
    digest = hashlib.sha256(f"{FORMAT} {SCHEMA_VERSION} {DOMAIN} {OPSET_VERSION}".encode())
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        digest.update(f.name.encode() + f.read_bytes())
    return src, digest.hexdigest()[:16]
