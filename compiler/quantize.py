"""`gptoss-edge quantize IN_DIR OUT_DIR`: an unquantized Hugging Face gpt-oss checkpoint (what
`GptOssForCausalLM.save_pretrained` writes, fp32 or bf16, e.g. after fine-tuning) becomes the
exact layout gpt-oss is released in:

  config.json        ModelConfig.to_hf_dict() (quantization_config: mxfp4)
  model.safetensors  dense tensors bf16; experts as
                       model.layers.N.mlp.experts.gate_up_proj_blocks  uint8 [E, 2I, H/32, 16]
                       model.layers.N.mlp.experts.gate_up_proj_scales  uint8 [E, 2I, H/32]
                       model.layers.N.mlp.experts.down_proj_blocks     uint8 [E, H, I/32, 16]
                       model.layers.N.mlp.experts.down_proj_scales     uint8 [E, H, I/32]
                       ..._bias                                        bf16
  tokenizer / generation files copied unchanged.

The unquantized HF module stores experts input-major: gate_up_proj [E, H, 2I] (columns interleaved,
even = gate, odd = linear), down_proj [E, I, H]. The released layout is output-major with MXFP4
blocks of 32 along the input dim, so each expert matrix is transposed before encoding; the
gate/linear interleave is kept as is (row 2j = gate j, row 2j+1 = linear j in both).
Peak memory: one source tensor at a time (fp32) plus its encoded form.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from gptoss_edge.compiler import mxfp4
from gptoss_edge.compiler.checkpoint import CheckpointError, _hf_files
from gptoss_edge.compiler.config import ConfigError, from_hf_dict
from gptoss_edge.compiler.safetensors_io import SafetensorsFile, SafetensorsWriter, TensorSpec

_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "generation_config.json", "chat_template.jinja")


class QuantizeError(ValueError):
    """An input the quantizer cannot turn into a released gpt-oss checkpoint; names the file/key."""


def read_source_config(in_dir: Path) -> dict:
    path = in_dir / "config.json"
    if not path.is_file():
        raise QuantizeError(f"{in_dir}: no config.json (expected a Hugging Face gpt-oss checkpoint)")
    raw = json.loads(path.read_text())
    if "quantization_config" in raw:
        method = raw["quantization_config"].get("quant_method")
        raise QuantizeError(f"{path}: checkpoint is already {str(method).upper()}-quantized "
                            "(quantization_config present); give the unquantized one")
    return raw


def released_config(raw: dict, path: Path) -> dict:
    """The source config.json (transformers 4 or 5 keys) in the released gpt-oss shape."""
    hf_only = {"swiglu_alpha"}            # transformers 5 writes it; gpt-oss fixes it at 1.702
    if raw.get("swiglu_alpha", 1.702) != 1.702:
        raise QuantizeError(f"{path}: swiglu_alpha {raw['swiglu_alpha']} (gpt-oss uses 1.702)")
    try:
        cfg = from_hf_dict({k: v for k, v in raw.items() if k not in hf_only})
    except ConfigError as e:
        raise QuantizeError(f"{path}: {e}") from None
    return cfg.to_hf_dict()


def released_specs(name: str, dtype: str, shape: tuple[int, ...], cfg: dict) -> list[TensorSpec]:
    """What one source tensor becomes: an expert matrix -> uint8 blocks + scales (output-major),
    anything else -> the same shape in bf16."""
    if not _EXPERT.match(name):
        if dtype not in ("F32", "BF16", "F16"):
            raise QuantizeError(f"{name}: dtype {dtype}, expected a float tensor")
        return [TensorSpec(name, "BF16", shape)]
    E, H, I = cfg["num_local_experts"], cfg["hidden_size"], cfg["intermediate_size"]
    expected = (E, H, 2 * I) if name.endswith("gate_up_proj") else (E, I, H)
    if shape != expected:
        raise QuantizeError(f"{name}: shape {shape}, expected {expected} [E, in, out] for this config")
    e, d_in, d_out = shape
    nb = d_in // mxfp4.BLOCK
    return [TensorSpec(f"{name}_blocks", "U8", (e, d_out, nb, mxfp4.BYTES_PER_BLOCK)),
            TensorSpec(f"{name}_scales", "U8", (e, d_out, nb))]


def encode_expert(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[E, in, out] float -> MXFP4 blocks [E, out, in/32, 16], scales [E, out, in/32]."""
    return mxfp4.encode(np.swapaxes(w, 1, 2))


def source_files(in_dir: Path) -> dict[str, SafetensorsFile]:
    try:
        return _hf_files(in_dir)
    except CheckpointError as e:
        raise QuantizeError(str(e)) from None


def quantize_checkpoint(in_dir: Path, out_dir: Path) -> dict:
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise QuantizeError(f"{out_dir}: exists and is not empty; choose a new output directory")
    raw = read_source_config(in_dir)
    cfg = released_config(raw, in_dir / "config.json")
    files = source_files(in_dir)
    names = sorted(files)
    specs = [spec for n in names for spec in released_specs(
        n, files[n].info(n).dtype, tuple(files[n].info(n).shape), cfg)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with SafetensorsWriter(out_dir / "model.safetensors", specs, {"format": "pt"}) as w:
        for n in names:         # one source tensor in memory at a time
            x = files[n].float32(n)
            if _EXPERT.match(n):
                blocks, scales = encode_expert(x)
                w.write(f"{n}_blocks", blocks)
                w.write(f"{n}_scales", scales)
            else:
                w.write(n, x)    # the writer rounds float32 to bf16, nearest even
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    copied = [f for f in COPIED_FILES if (in_dir / f).is_file()]
    for f in copied:
        shutil.copyfile(in_dir / f, out_dir / f)
    return {"out": str(out_dir), "tensors": len(specs), "copied": copied}
