"""`gptoss-edge quantize`: an fp32 HF gpt-oss checkpoint becomes the released MXFP4 layout, and
transformers (the oracle, Mxfp4Config(dequantize=True)) reads it back as the same model."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from gptoss_edge.cli import main as cli_main
from gptoss_edge.compiler import mxfp4
from gptoss_edge.compiler.checkpoint import open_checkpoint
from gptoss_edge.compiler.config import ModelConfig, load_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=8,
             num_experts_per_tok=2)


@pytest.fixture(scope="module")
def fp32_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GptOssConfig(**SHAPE, sliding_window=128, eos_token_id=5, pad_token_id=7,
                                    attn_implementation="eager")
    model = transformers.GptOssForCausalLM(cfg).eval()
    with torch.no_grad():  # experts at a realistic spread (init std 0.02 hides scale bugs)
        for layer in model.model.layers:
            layer.mlp.experts.gate_up_proj.normal_(0, 0.5)
            layer.mlp.experts.down_proj.normal_(0, 0.5)
            layer.mlp.experts.gate_up_proj_bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("fp32")
    model.save_pretrained(path)
    (path / "tokenizer.json").write_text("{}")
    return path, model


@pytest.fixture(scope="module")
def quantized(fp32_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("mxfp4") / "ckpt"
    assert cli_main(["quantize", str(fp32_checkpoint[0]), str(out)]) == 0
    return out


def test_config_is_the_released_shape(quantized):
    cfg = load_config(quantized)
    expected = ModelConfig(**SHAPE, eos_token_id=5, pad_token_id=7).to_hf_dict()
    assert json.loads((quantized / "config.json").read_text()) == expected
    assert cfg.num_local_experts == 8 and cfg.rope_scaling_factor == 32.0
    assert (quantized / "tokenizer.json").read_text() == "{}"


def test_tensor_layout_is_the_released_layout(quantized):
    open_checkpoint(quantized).validate()    # the compiler's reader accepts it as released
    E, H, I = SHAPE["num_local_experts"], SHAPE["hidden_size"], SHAPE["intermediate_size"]
    with safe_open(quantized / "model.safetensors", "np") as f:
        meta = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    p = "model.layers.1.mlp.experts."
    assert meta[p + "gate_up_proj_blocks"] == ("U8", (E, 2 * I, H // 32, 16))
    assert meta[p + "gate_up_proj_scales"] == ("U8", (E, 2 * I, H // 32))
    assert meta[p + "gate_up_proj_bias"] == ("BF16", (E, 2 * I))
    assert meta[p + "down_proj_blocks"] == ("U8", (E, H, I // 32, 16))
    assert meta[p + "down_proj_scales"] == ("U8", (E, H, I // 32))
    assert meta[p + "down_proj_bias"] == ("BF16", (E, H))
    assert p + "gate_up_proj" not in meta and p + "down_proj" not in meta
    dense = {k: v for k, v in meta.items() if not (k.endswith("_blocks") or k.endswith("_scales"))}
    assert {d for d, _ in dense.values()} == {"BF16"}
    assert meta["model.layers.0.self_attn.sinks"] == ("BF16", (SHAPE["num_attention_heads"],))
    assert meta["lm_head.weight"] == ("BF16", (SHAPE["vocab_size"], H))


def test_transformers_reads_back_the_same_model(fp32_checkpoint, quantized):
    src = fp32_checkpoint[1]
    q = transformers.GptOssForCausalLM.from_pretrained(
        quantized, dtype=torch.float32, attn_implementation="eager",
        quantization_config=transformers.Mxfp4Config(dequantize=True)).eval()
    qs, ss = q.state_dict(), src.state_dict()
    for name, w in ss.items():
        if name.endswith("gate_up_proj") or name.endswith("down_proj"):
            # transformers decodes exactly our codec's values, in the HF [E, in, out] layout
            # (proves the transposition and the kept gate/linear interleave)
            ours = mxfp4.decode(*mxfp4.encode(w.numpy().swapaxes(1, 2))).swapaxes(1, 2)
            assert torch.equal(qs[name], torch.from_numpy(np.ascontiguousarray(ours))), name
            # MXFP4 (E2M1, one power-of-two scale per 32 inputs): relative RMS error of N(0,1)
            # weights is ~0.09 when the scale puts the block max near 6; 0.15 catches a wrong
            # scale (x2 -> ~0.2) and any transposition or de-interleaving (~1.4).
            err = (qs[name] - w).norm() / w.norm()
            assert err < 0.15, f"{name}: relative error {err:.3f}"
        else:
            # dense tensors are stored bf16: exactly the bf16 rounding of the fp32 weight
            assert torch.equal(qs[name], w.to(torch.bfloat16).float()), name


def test_bad_inputs_name_the_problem(fp32_checkpoint, quantized, tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        cli_main(["quantize", str(tmp_path / "missing"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="already MXFP4"):
        cli_main(["quantize", str(quantized), str(tmp_path / "out2")])
    with pytest.raises(SystemExit, match="exists"):
        cli_main(["quantize", str(fp32_checkpoint[0]), str(quantized)])


def test_bf16_source_keeps_dense_tensors_bit_exact(fp32_checkpoint, tmp_path):
    """A bf16 checkpoint (what fine-tuning usually saves) quantizes too; its dense tensors are
    copied without any rounding."""
    src = tmp_path / "bf16"
    fp32_checkpoint[1].to(torch.bfloat16).save_pretrained(src)
    out = tmp_path / "out"
    assert cli_main(["quantize", str(src), str(out)]) == 0
    open_checkpoint(out).validate()
    with safe_open(src / "model.safetensors", "pt") as a, safe_open(out / "model.safetensors", "pt") as b:
        for name in a.keys():
            if not name.endswith(("gate_up_proj", "down_proj")):
                assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name
