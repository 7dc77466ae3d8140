"""The embedded default model (gptoss_edge/models/default): declared architecture, released MXFP4
layout, its tokenizer, its recorded held-out perplexity and a small chat-quality floor, all
measured with transformers (eager, fp32, experts dequantized on load).

Engine-vs-reference checks (held-out perplexity, identical greedy replies) are in
tests/test_default_model_engine.py (ONNX Runtime engine; TensorRT later).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from tiny_model_support import REPO, default_model_dir, reference_model

from gptoss_edge.compiler.checkpoint import open_checkpoint
from gptoss_edge.compiler.config import FULL, SLIDING, load_config

import harmony_text as ht

TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return default_model_dir()


@pytest.fixture(scope="module")
def figures(model_dir):
    return json.loads((model_dir / "figures.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def hf_model(model_dir):
    return reference_model(model_dir)


def test_declared_architecture(model_dir):
    cfg = load_config(model_dir)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (4, 128, 256)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 32)
    assert (cfg.num_local_experts, cfg.num_experts_per_tok) == (8, 2)
    assert cfg.layer_types == (SLIDING, FULL, SLIDING, FULL) and cfg.sliding_window == 128
    assert (cfg.rope_theta, cfg.rope_scaling_factor, cfg.rope_original_context) == (150000.0, 32.0, 4096)
    assert (cfg.rope_beta_fast, cfg.rope_beta_slow, cfg.swiglu_limit) == (32.0, 1.0, 7.0)
    assert cfg.vocab_size == 3072
    raw = json.loads((model_dir / "config.json").read_text())
    assert raw["quantization_config"]["quant_method"] == "mxfp4"
    assert raw == cfg.to_hf_dict()       # exactly the released config.json shape


def test_released_mxfp4_layout_and_size(model_dir):
    ckpt = open_checkpoint(model_dir)
    assert ckpt.layout == "hf"
    ckpt.validate()                      # every released key, shape and dtype; nothing extra
    cfg = ckpt.config
    E, H, I = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    with safe_open(model_dir / "model.safetensors", "np") as f:
        meta = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}.mlp.experts."
        assert meta[p + "gate_up_proj_blocks"] == ("U8", (E, 2 * I, H // 32, 16))
        assert meta[p + "gate_up_proj_scales"] == ("U8", (E, 2 * I, H // 32))
        assert meta[p + "down_proj_blocks"] == ("U8", (E, H, I // 32, 16))
        assert meta[p + "down_proj_scales"] == ("U8", (E, H, I // 32))
        assert meta[p + "gate_up_proj_bias"][0] == meta[p + "down_proj_bias"][0] == "BF16"
        assert meta[f"model.layers.{n}.self_attn.sinks"] == ("BF16", (cfg.num_attention_heads,))
    dense = [d for k, (d, _) in meta.items() if not k.endswith(("_blocks", "_scales"))]
    assert set(dense) == {"BF16"}
    assert (model_dir / "model.safetensors").stat().st_size < 10 * 2**20


def test_tokenizer_special_tokens_and_round_trip(tokenizer):
    for i, token in enumerate(ht.SPECIAL_TOKENS):   # fixed ids 0..7, one token each
        assert tokenizer.token_to_id(token) == i
        assert tokenizer.encode(token).ids == [i]
    text = (ht.user_message("What does json.dumps do? ünïcode ✓ \t tabs")
            + ht.tool_call({"name": "json.dumps"}) + "def f(x):\n    return {'a': x}\n")
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert ids[:3] == [0, tokenizer.token_to_id("user"), 2]      # <|start|>user<|message|>
    assert tokenizer.get_vocab_size() == 3072


def heldout_ids(tokenizer, seq_len: int) -> np.ndarray:
    """[n, seq_len] non-overlapping windows of the held-out sample's token ids, tail dropped (the
    recipe's definition, written here again so that the recipe's code is not its own check)."""
    ids = tokenizer.encode((TEST_DATA / "tiny_model_heldout.txt").read_text("utf-8")).ids
    n = len(ids) // seq_len
    return np.array(ids[:n * seq_len], dtype=np.int64).reshape(n, seq_len)


def assistant_mask(tokenizer, windows: np.ndarray) -> np.ndarray:
    """Bool per token of `windows` (the held-out sample): the assistant writes it (the recipe's
    definition of what training predicts, recipes/tiny_model/supervision.py)."""
    from supervision import supervised_pieces
    sep = "<|endoftext|>"
    ids: list[int] = []
    mask: list[bool] = []
    for i, doc in enumerate((TEST_DATA / "tiny_model_heldout.txt").read_text("utf-8").split(sep)):
        if i:
            ids.append(tokenizer.token_to_id(sep))
            mask.append(False)
        for piece, said in supervised_pieces(doc) if doc else ():
            piece_ids = tokenizer.encode(piece).ids
            ids.extend(piece_ids)
            mask.extend([said] * len(piece_ids))
    assert ids[:windows.size] == windows.reshape(-1).tolist()   # pieces tokenize as the whole text
    return np.array(mask[:windows.size]).reshape(windows.shape)


def next_token_nll(hf_model, windows: np.ndarray) -> np.ndarray:
    """-log p(token t+1 | tokens <= t) for every position of every window, float64 numpy."""
    import torch
    out = []
    with torch.no_grad():
        for chunk in np.array_split(windows, max(1, len(windows) // 8)):
            logits = hf_model(input_ids=torch.from_numpy(chunk)).logits[:, :-1].double().numpy()
            top = logits.max(-1, keepdims=True)
            log_z = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[..., 0]
            out.append(log_z - np.take_along_axis(logits, chunk[:, 1:, None], -1)[..., 0])
    return np.concatenate(out).reshape(-1)


def test_heldout_perplexity_matches_the_recorded_figure(hf_model, tokenizer, figures):
    windows = heldout_ids(tokenizer, figures["seq_len"])
    assert windows.size == figures["test_sample_tokens"]
    nll = next_token_nll(hf_model, windows)
    ppl = float(np.exp(nll.mean()))
    # Same checkpoint, same fp32 eager computation: only summation order (BLAS build, threads)
    # differs, ~1e-6 relative on the logits; 1% would already be a changed weight or tokenizer.
    assert ppl == pytest.approx(figures["test_sample_ppl_mxfp4"], rel=2e-3)
    # The model uses its context where it was trained to predict (the recipe's loss covers what
    # the assistant writes; prompts and tool results are context, so over all tokens the model
    # may well lose to a unigram): by Gibbs' inequality no context-free predictor has a lower
    # cross-entropy on the assistant's tokens than their own frequencies (the unigram fitted on
    # those tokens themselves, perplexity exp(entropy)); an untrained model sits near the
    # vocabulary size (3072).
    targets = windows[:, 1:].reshape(-1)
    said = assistant_mask(tokenizer, windows)[:, 1:].reshape(-1)
    assert said.sum() > 1000
    assistant_ppl = float(np.exp(nll[said].mean()))
    _, counts = np.unique(targets[said], return_counts=True)
    p = counts / counts.sum()
    unigram_ppl = float(np.exp(-(p * np.log(p)).sum()))
    print(f"held-out sample: perplexity {ppl:.2f}; on the assistant's {said.sum()} tokens {assistant_ppl:.2f}, "
          f"unigram fitted on those tokens {unigram_ppl:.1f}")
    assert assistant_ppl < unigram_ppl


def test_greedy_chats_are_well_formed_harmony(hf_model, tokenizer):
    from data import Entry
    from evaluate import quality
    fixture = json.loads((TEST_DATA / "tiny_model_chats.json").read_text())
    table = {e["name"]: Entry(**e) for e in fixture["entries"]}
    q = quality(hf_model, tokenizer, fixture["chats"], table)
    assert q["tool_prompts"] >= 4
    # Floors of the shipped model on its own training prompts (the recipe measures 100):
    # every reply must parse as harmony and end in a final answer, tool calls carry JSON args.
    assert q["well_formed_final_pct"] >= 90.0, q["failures"]
    assert q["tool_call_valid_json_pct"] >= 90.0, q["failures"]
