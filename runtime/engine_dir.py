"""Open an engine directory for serving: backend by manifest target, tokenizer by manifest
spec, and the embedded default model's engine when none is named."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gptoss_edge.runtime.backend import Backend


class EngineDirError(ValueError):
    """An engine directory that cannot be served; the message names the file or key."""


def read_manifest(engine_dir: Path) -> dict[str, Any]:
    path = Path(engine_dir) / "manifest.json"
    if not path.is_file():
        raise EngineDirError(f"{engine_dir}: no manifest.json (not a compiled engine dir; "
                             f"build one with `gptoss-edge compile`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EngineDirError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or "target" not in manifest:
        raise EngineDirError(f"{path}: missing key 'target'")
    return manifest


def open_backend(engine_dir: Path, manifest: dict[str, Any], max_slots: int | None) -> Backend:
    target = manifest["target"]
    if target == "onnxruntime":
        from gptoss_edge.runtime.ort_backend import OrtBackend
        return OrtBackend(engine_dir, max_slots=max_slots)
    raise EngineDirError(f"{engine_dir}/manifest.json: target {target!r} cannot be served on this "
                         f"machine (supported: onnxruntime)")


def open_tokenizer(engine_dir: Path, manifest: dict[str, Any]):
    spec = manifest.get("tokenizer")
    if spec is None:
        return None
    from gptoss_edge.runtime.tokenizer import load_tokenizer
    return load_tokenizer(spec, base_dir=engine_dir)


def model_name(engine_dir: Path, manifest: dict[str, Any]) -> str:
    return str(manifest.get("name") or Path(engine_dir).resolve().name)


def default_engine_dir() -> Path:
    """Engine dir of the embedded default model (issue 6), compiled on first use and cached.

    Hook for the lead: until the embedded model and its compile step are wired in here, the
    environment variable GPTOSS_EDGE_DEFAULT_ENGINE may point at any compiled engine dir.
    """
    env = os.environ.get("GPTOSS_EDGE_DEFAULT_ENGINE")
    if env:
        return Path(env)
    raise EngineDirError("no ENGINE_DIR given and the embedded default model is not wired into "
                         "this build yet; pass an engine dir (or set GPTOSS_EDGE_DEFAULT_ENGINE)")
