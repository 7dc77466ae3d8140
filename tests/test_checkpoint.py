"""Checkpoint reader: both layouts, shards, canonical tensors, and every promised error."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gptoss_edge.compiler.checkpoint import CheckpointError, open_checkpoint
from gptoss_edge.compiler.config import ConfigError, preset
from gptoss_edge.compiler.safetensors_io import SafetensorsFile, save_file
from gptoss_edge.compiler.synthetic import CheckpointExistsError, canonical_tensor, write_checkpoint

TINY = preset("tiny")
SEED = 7


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "hf": write_checkpoint(root / "hf", TINY, "hf", SEED),
        "original": write_checkpoint(root / "orig", TINY, "original", SEED),
        "sharded": write_checkpoint(root / "sharded", TINY, "hf", SEED, shard_bytes=100_000),
    }


def copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / "ckpt")


def rewrite(path, mutate) -> None:
    """Rewrite one safetensors file after mutate({name: (dtype, array)})."""
    f = SafetensorsFile(path)
    tensors = {k: (f.info(k).dtype, np.array(f.array(k))) for k in f.keys()}
    mutate(tensors)
    save_file(path, tensors, f.metadata)


def test_layouts_and_shards_give_identical_canonical_tensors(ckpts):
    opened = {k: open_checkpoint(p) for k, p in ckpts.items()}
    for c in opened.values():
        c.validate()
    assert [opened[k].layout for k in ("hf", "original", "sharded")] == ["hf", "original", "hf"]
    assert len(list(ckpts["sharded"].glob("model-*-of-*.safetensors"))) > 1
    hf = opened["hf"]
    assert hf.config == TINY and opened["original"].config.num_local_experts == 8
    assert len(hf.names()) == 3 + 19 * TINY.num_hidden_layers
    for name in hf.names():
        ref = hf.get(name)
        want_dtype = np.uint8 if name.endswith(("_blocks", "_scales")) else np.float32
        assert ref.dtype == want_dtype and ref.shape == hf.expected(name).shape, name
        for other in ("original", "sharded"):
            assert np.array_equal(opened[other].get(name), ref), (other, name)


def test_values_are_the_generated_weights_rounded_to_bf16(ckpts):
    c = open_checkpoint(ckpts["original"])
    name = "model.layers.1.self_attn.k_proj.weight"      # a row slice of the fused qkv
    generated = canonical_tensor(TINY, name, SEED)
    got = c.get(name)
    # bf16 keeps 8 significant bits: round-to-nearest errs by at most 2^-8 relative.
    assert (np.abs(got - generated) <= np.abs(generated) * 2.0 ** -8).all()
    assert np.array_equal(c.get(name, rows=(3, 9)), got[3:9])
    blocks = canonical_tensor(TINY, "model.layers.1.mlp.experts.down_proj_blocks", SEED)
    assert np.array_equal(c.get("model.layers.1.mlp.experts.down_proj_blocks"), blocks)
    other_seed = canonical_tensor(TINY, name, SEED + 1)
    assert not np.allclose(other_seed, generated)


def test_raw_views_are_zero_copy(ckpts):
    c = open_checkpoint(ckpts["hf"])
    array, dtype = c.raw("lm_head.weight")
    assert dtype == "BF16" and array.dtype == np.uint16 and not array.flags.owndata


def test_layout_detection(ckpts, tmp_path):
    both = copy(ckpts["hf"], tmp_path)                     # a released repo holds both layouts
    shutil.copytree(ckpts["original"] / "original", both / "original")
    assert open_checkpoint(both).layout == "hf"
    assert open_checkpoint(both, layout="original").layout == "original"
    assert open_checkpoint(both / "original").layout == "original"   # the subdir itself
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        open_checkpoint(tmp_path / "ckpt" / "original", layout="hf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        open_checkpoint(tmp_path / "empty")


def test_missing_key(ckpts, tmp_path):
    d = copy(ckpts["hf"], tmp_path)
    rewrite(d / "model.safetensors", lambda t: t.pop("model.layers.2.self_attn.sinks"))
    c = open_checkpoint(d)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing key 'model\.layers\.2\.self_attn\.sinks'"):
        c.validate()
    with pytest.raises(CheckpointError, match="missing key 'model.layers.2.self_attn.sinks'"):
        c.get("model.layers.2.self_attn.sinks")


def test_unexpected_key(ckpts, tmp_path):
    d = copy(ckpts["original"], tmp_path)
    extra = "block.4.attn.sinks"                             # a 5th layer in a 4-layer model
    rewrite(d / "original" / "model.safetensors",
            lambda t: t.update({extra: ("BF16", np.zeros(4, np.uint16))}))
    with pytest.raises(CheckpointError, match=rf"original/model\.safetensors: unexpected key '{extra}'"):
        open_checkpoint(d).validate()


def test_wrong_shape(ckpts, tmp_path):
    d = copy(ckpts["original"], tmp_path)
    key = "block.0.attn.qkv.weight"
    rewrite(d / "original" / "model.safetensors",
            lambda t: t.update({key: ("BF16", np.zeros((127, 64), np.uint16))}))
    c = open_checkpoint(d)
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: key '{key}' has shape \[127, 64\], expected \[128, 64\]"):
        c.validate()
    with pytest.raises(CheckpointError, match=key):
        c.get("model.layers.0.self_attn.v_proj.weight")


def test_wrong_dtype(ckpts, tmp_path):
    d = copy(ckpts["hf"], tmp_path)
    key = "model.layers.1.mlp.experts.gate_up_proj_scales"
    rewrite(d / "model.safetensors",
            lambda t: t.update({key: ("I8", t[key][1].view(np.int8))}))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: key '{key}' has dtype I8, expected U8"):
        open_checkpoint(d).validate()


def test_float_tensors_may_be_stored_as_f32(ckpts, tmp_path):
    d = copy(ckpts["hf"], tmp_path)
    key = "model.norm.weight"
    rewrite(d / "model.safetensors", lambda t: t.update(
        {key: ("F32", (t[key][1].astype(np.uint32) << 16).view(np.float32))}))
    c = open_checkpoint(d)
    c.validate()
    assert np.array_equal(c.get(key), open_checkpoint(ckpts["hf"]).get(key))


def test_truncated_file(ckpts, tmp_path):
    d = copy(ckpts["sharded"], tmp_path)
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-1000])
    with pytest.raises(CheckpointError, match=rf"{shard.name}: tensor '[^']+': data ends at byte \d+ .*truncated"):
        open_checkpoint(d)


@pytest.mark.parametrize("breakage,match", [
    (lambda idx: "{not json", r"index\.json: not a safetensors index"),
    (lambda idx: json.dumps({"metadata": {}}), r"index\.json: not a safetensors index \(KeyError"),
    (lambda idx: json.dumps({"weight_map": {**idx["weight_map"], "lm_head.weight": "model-00009-of-00009.safetensors"}}),
     r"key 'lm_head\.weight' maps to 'model-00009-of-00009\.safetensors', which does not exist"),
    (lambda idx: json.dumps({"weight_map": {k: v for k, v in idx["weight_map"].items() if k != "model.norm.weight"}}),
     r"key 'model\.norm\.weight' is not listed for this file"),
    (lambda idx: json.dumps({"weight_map": {**idx["weight_map"], "model.norm.weight": sorted(set(idx["weight_map"].values()))[0]}}),
     r"key 'model\.norm\.weight' maps to 'model-00001-of-\d+\.safetensors', which does not hold it"),
])
def test_broken_index(ckpts, tmp_path, breakage, match):
    d = copy(ckpts["sharded"], tmp_path)
    index = d / "model.safetensors.index.json"
    index.write_text(breakage(json.loads(index.read_text())))
    with pytest.raises(CheckpointError, match=match):
        open_checkpoint(d)


def test_shards_without_index(ckpts, tmp_path):
    d = copy(ckpts["sharded"], tmp_path)
    (d / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="shards but no model.safetensors.index.json"):
        open_checkpoint(d)


def test_bad_config_in_checkpoint(ckpts, tmp_path):
    d = copy(ckpts["hf"], tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_key_value_heads"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: num_attention_heads: 4 query heads are not a multiple of 3"):
        open_checkpoint(d)


def test_config_of_other_model_size_is_caught_by_validate(ckpts, tmp_path):
    d = copy(ckpts["original"], tmp_path)
    cfg = json.loads((d / "original" / "config.json").read_text())
    cfg["num_experts"] = 4
    (d / "original" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"key 'block\.0\.mlp\.gate\.weight' has shape \[8, 64\], expected \[4, 64\]"):
        open_checkpoint(d).validate()


def test_write_refuses_existing_dir_and_leaves_no_partial(ckpts, tmp_path):
    with pytest.raises(CheckpointExistsError, match="already exists"):
        write_checkpoint(ckpts["hf"], TINY)
    with pytest.raises(ValueError, match="unknown layout"):
        write_checkpoint(tmp_path / "x", TINY, layout="gguf")
    assert not list(tmp_path.iterdir())
