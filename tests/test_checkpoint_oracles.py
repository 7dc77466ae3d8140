"""Our synthetic checkpoints are the real format: the two reference loaders (Hugging Face
transformers with its MXFP4 dequantizer, OpenAI's gpt_oss.torch) read them without missing or
unexpected keys, and every parameter they load equals what our reader + decoder produce."""
from __future__ import annotations

import numpy as np
import pytest

from gptoss_edge.compiler import mxfp4
from gptoss_edge.compiler.checkpoint import open_checkpoint
from gptoss_edge.compiler.checkpoint_schema import original_source
from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.synthetic import write_checkpoint

torch = pytest.importorskip("torch")
TINY = preset("tiny")


def ours_dense_or_decoded(ckpt, name: str) -> np.ndarray:
    """Canonical tensor, MXFP4 experts decoded ([E, out, in])."""
    if name.endswith("_proj"):
        return mxfp4.decode(ckpt.get(name + "_blocks"), ckpt.get(name + "_scales"))
    return ckpt.get(name)


def test_transformers_loads_our_hf_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = write_checkpoint(tmp_path / "hf", TINY, "hf", seed=3, shard_bytes=150_000)  # sharded
    model, info = transformers.GptOssForCausalLM.from_pretrained(
        path, quantization_config=transformers.Mxfp4Config(dequantize=True),
        dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ckpt = open_checkpoint(path)
    state = model.state_dict()
    # per layer, 2 x (blocks, scales) become 2 dequantized parameters
    assert len(state) == len(ckpt.names()) - 2 * TINY.num_hidden_layers
    for name, param in state.items():
        ours = ours_dense_or_decoded(ckpt, name)
        if name.endswith("_proj"):      # HF keeps experts as [E, in, out]
            ours = ours.transpose(0, 2, 1)
        # Exact: bf16 -> fp32 and MXFP4 -> fp32 are both exact conversions.
        assert np.array_equal(param.detach().numpy(), ours), name


def test_gpt_oss_reference_loads_our_original_checkpoint(tmp_path):
    model_mod = pytest.importorskip("gpt_oss.torch.model")
    path = write_checkpoint(tmp_path / "orig", TINY, "original", seed=3)
    model = model_mod.Transformer.from_checkpoint(str(path / "original"), device="cpu")
    params = dict(model.named_parameters())
    ckpt = open_checkpoint(path)
    seen = set()
    for name in ckpt.names():
        if name.endswith("_scales"):
            continue
        src = original_source(TINY, name)
        key = src.key.removesuffix(".blocks")
        seen.add(key)
        theirs = params[key].detach().float().numpy()
        if src.rows is not None:
            theirs = theirs[src.rows[0]:src.rows[1]]
        ours = ours_dense_or_decoded(ckpt, name.removesuffix("_blocks"))
        # Exact: the reference holds bf16 (MXFP4 values need <= 3 significant bits), norms fp32.
        assert np.array_equal(theirs, ours), name
    assert seen == set(params)


def test_hf_and_original_of_one_seed_load_to_the_same_model(tmp_path):
    """Both oracles, each from its own layout, hold the same numbers for the same seed."""
    transformers = pytest.importorskip("transformers")
    model_mod = pytest.importorskip("gpt_oss.torch.model")
    hf = transformers.GptOssForCausalLM.from_pretrained(
        write_checkpoint(tmp_path / "hf", TINY, "hf", seed=5),
        quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=torch.float32)
    orig = model_mod.Transformer.from_checkpoint(
        str(write_checkpoint(tmp_path / "o", TINY, "original", seed=5) / "original"), device="cpu")
    a = hf.model.layers[1].mlp.experts.down_proj.detach()               # [E, I, H]
    b = orig.block[1].mlp.mlp2_weight.detach().float().transpose(1, 2)  # [E, H, I] -> [E, I, H]
    assert torch.equal(a, b)
    qkv = orig.block[2].attn.qkv.weight.detach().float()
    attn = hf.model.layers[2].self_attn
    assert torch.equal(qkv, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
