"""Shared helpers for the tiny-model tests: recipe imports, the shipped model dir, o200k harmony."""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "tiny_model"
if str(RECIPE) not in sys.path:
    sys.path.insert(0, str(RECIPE))

O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def default_model_dir() -> Path:
    from gptoss_edge.models import default_model_dir as find
    return find()


def harmony_o200k(cache_dir: Path):
    """openai_harmony's gpt-oss encoding, its o200k vocabulary taken offline from bpe-openai."""
    harmony = pytest.importorskip("openai_harmony")
    bpe_openai = pytest.importorskip("bpe_openai")
    target = cache_dir / "o200k_base.tiktoken"
    if not target.exists():
        gz = Path(bpe_openai.__file__).parent / "data" / "o200k_base.tiktoken.gz"
        data = gzip.decompress(gz.read_bytes())
        assert hashlib.sha256(data).hexdigest() == O200K_SHA256, f"{gz}: unexpected o200k content"
        cache_dir.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(cache_dir)
    return harmony, harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)


def reference_model(model_dir: Path):
    """transformers' GptOssForCausalLM on the shipped checkpoint: fp32, eager, experts dequantized."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)   # shared 2-core CI: a second thread mostly spins
    return transformers.GptOssForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager",
        quantization_config=transformers.Mxfp4Config(dequantize=True)).eval()
