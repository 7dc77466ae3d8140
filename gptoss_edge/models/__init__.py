"""Models shipped inside the package.

`default/` is the embedded default model: a 4.2M-parameter gpt-oss-architecture model trained on
CPU from Python's standard library (recipe: recipes/tiny_model/, figures: default/README.md), in the
released gpt-oss Hugging Face layout (MXFP4 experts) with its own BPE tokenizer.json.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_NAME = "default"


def default_model_dir() -> Path:
    """Directory of the embedded default model (config.json, model.safetensors, tokenizer.json)."""
    path = Path(__file__).resolve().parent / DEFAULT_MODEL_NAME
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: the embedded default model is missing (no config.json); "
                                "regenerate it with recipes/tiny_model/build.sh")
    return path
