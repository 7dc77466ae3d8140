"""The tiny model's copy-circuit initialisation (recipes/tiny_model/circuits.py) does what it says."""
from __future__ import annotations

import numpy as np
import pytest

import tiny_model_support  # noqa: F401  (puts the recipe on sys.path)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import circuits  # noqa: E402
from train import model_config  # noqa: E402


def _model():
    torch.manual_seed(0)
    return transformers.GptOssForCausalLM(model_config(3072, 5, 7)).eval()


def test_previous_token_head_attends_to_the_token_before():
    model = _model()
    circuits.previous_token_head(model)
    ids = torch.from_numpy(np.random.default_rng(0).integers(8, 3072, (2, 200)))   # > the 128 window
    with torch.no_grad():
        att = model(input_ids=ids, output_attentions=True).attentions[0]          # layer 0 [B, H, T, T]
    group = model.config.num_attention_heads // model.config.num_key_value_heads
    t = torch.arange(1, 200)
    for h in range(group):                       # the query heads of kv head 0
        on_previous = att[:, h, t, t - 1]
        # RoPE phase bias alone, whatever the tokens: the neighbours sit ~20 logits lower, so the
        # weight on m-1 is 1 up to the sink and exp(-20) leaks; 0.99 leaves room for the sink.
        assert on_previous.min() > 0.99, (h, on_previous.min())
    untouched = att[:, group, t, t - 1]          # the other kv group keeps its random init
    assert untouched.mean() < 0.5


def test_copy_batch_labels_only_the_predictable_repeat():
    x, y = circuits.copy_batch(np.random.default_rng(1), batch=3, length=5, first_id=8, vocab=20)
    assert x.shape == y.shape == (3, 10)
    assert torch.equal(x[:, :5], x[:, 5:]) and int(x.min()) >= 8 and int(x.max()) < 20
    assert (y[:, :6] == -100).all() and torch.equal(y[:, 6:], x[:, 6:])


def test_unembedding_starts_as_the_embedding():
    model = _model()
    circuits.unembedding_from_embedding(model)
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()   # still untied
