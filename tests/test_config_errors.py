"""Bad config.json files (both layouts) fail with a ConfigError naming the key; good ones round-trip."""
from __future__ import annotations

import json

import pytest

from gptoss_edge.compiler.config import ConfigError, load_config, preset

GOOD_HF = preset("gpt-oss-20b").to_hf_dict()
GOOD_ORIGINAL = preset("gpt-oss-120b").to_original_dict()


def write(tmp_path, d) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d) if isinstance(d, dict) else d)
    return path


def test_released_configs_round_trip(tmp_path):
    assert load_config(write(tmp_path, GOOD_HF)) == preset("gpt-oss-20b")
    assert load_config(write(tmp_path, GOOD_ORIGINAL)) == preset("gpt-oss-120b")


@pytest.mark.parametrize("change,key", [
    ({"hidden_sise": 2880}, "hidden_sise"),                          # unknown key
    ({"num_key_value_heads": 7}, "num_attention_heads"),             # 64 q heads vs 7 kv heads
    ({"num_experts_per_tok": 40, "experts_per_token": 40}, "num_experts_per_tok"),
    ({"experts_per_token": 2}, "experts_per_token"),                 # disagrees with num_experts_per_tok
    ({"hidden_size": 2881}, "hidden_size"),                          # not a multiple of 32
    ({"intermediate_size": 100}, "intermediate_size"),
    ({"head_dim": 63}, "head_dim"),                                  # RoPE needs even
    ({"vocab_size": 0}, "vocab_size"),
    ({"num_hidden_layers": 3}, "layer_types"),                       # 24 layer types for 3 layers
    ({"layer_types": ["sliding_attention", "global"] * 12}, "layer_types[1]"),
    ({"attention_bias": False}, "attention_bias"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"model_type": "llama"}, "model_type"),
    ({"rms_norm_eps": -1}, "rms_norm_eps"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2}}, "rope_scaling.rope_type"),
    ({"rope_scaling": {"rope_type": "yarn", "factr": 32}}, "factr"),
    ({"rope_scaling": {"rope_type": "yarn", "beta_fast": 1, "beta_slow": 1}}, "rope_beta_fast"),
])
def test_bad_hf_config_names_the_key(tmp_path, change, key):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**GOOD_HF, **change}))
    assert key in str(e.value) and "config.json" in str(e.value)


def test_missing_hf_key(tmp_path):
    d = dict(GOOD_HF)
    del d["num_local_experts"]
    with pytest.raises(ConfigError, match="missing key 'num_local_experts'"):
        load_config(write(tmp_path, d))


@pytest.mark.parametrize("change,key", [
    ({"num_expert": 32}, "num_expert"),
    ({"num_attention_heads": 60}, "num_attention_heads"),           # 60 % 8 != 0
    ({"experts_per_token": 129}, "num_experts_per_tok"),
    ({"swiglu_limit": 0}, "swiglu_limit"),
])
def test_bad_original_config_names_the_key(tmp_path, change, key):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**GOOD_ORIGINAL, **change}))
    assert key in str(e.value)


def test_unreadable_configs(tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(write(tmp_path, "{bad"))
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(write(tmp_path, "[1, 2]"))
    with pytest.raises(ConfigError, match="no config.json"):
        load_config(tmp_path / "nowhere")
