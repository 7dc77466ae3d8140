"""Never sample an id the tokenizer does not have: the README's tiny engine has a model
vocabulary of 512 but a tokenizer of 489 ids; the scheduler hands the sampler only the first
489 logits, greedy and random sampling alike."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gptoss_edge.engine_dir import load_manifest
from gptoss_edge.runtime.engine.backend import StepRow
from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams
from gptoss_edge.runtime.engine.scheduler import Scheduler, SeqRequest, sampleable_vocab
from gptoss_edge.runtime.tokens.tokenizer import load_tokenizer
from conftest import ort_backend


def test_sampleable_vocab():
    assert sampleable_vocab(512, None) == 512
    assert sampleable_vocab(512, 489) == 489
    assert sampleable_vocab(512, 201088) == 512
    with pytest.raises(ValueError, match="sample_vocab"):
        sampleable_vocab(512, 0)


def _prompt_whose_argmax_is_outside(backend, limit: int) -> tuple[list[int], np.ndarray]:
    """A prompt whose next-token logits peak beyond the tokenizer (bench hit id 503)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        prompt = rng.integers(0, limit, 8).tolist()
        logits = backend.step([StepRow(0, prompt)])[0]
        backend.release(0)
        if int(np.argmax(logits)) >= limit:
            return prompt, logits
    pytest.fail("no prompt with an out-of-tokenizer argmax in 200 tries")


def test_greedy_and_sampled_ids_stay_inside_the_tokenizer(readme_tiny_engine):
    m = load_manifest(readme_tiny_engine)
    tok = load_tokenizer(m.tokenizer, m.path)
    backend = ort_backend(readme_tiny_engine, max_slots=2, max_context=512)
    vocab = backend.info.config.vocab_size
    assert (vocab, tok.vocab_size) == (512, 489)          # the case the probe found
    prompt, logits = _prompt_whose_argmax_is_outside(backend, tok.vocab_size)

    async def main():
        sched = Scheduler(backend, 2, sample_vocab=tok.vocab_size)
        sched.start()
        greedy = sched.submit(SeqRequest(prompt, Sampler(SamplingParams(temperature=0.0)), 1))
        hot = sched.submit(SeqRequest(prompt, Sampler(SamplingParams(temperature=1.5, seed=3)),
                                      300))
        g = [ev async for ev in greedy]
        h = [ev async for ev in hot]
        await sched.close()
        return g, h

    g, h = asyncio.run(main())
    # Oracle: argmax over the tokenizer's ids of the logits the backend returned directly
    # (the same engine, same prompt, one step: bit-identical rows, so exact equality).
    assert g[0].token_id == int(np.argmax(logits[:tok.vocab_size]))
    assert len(h) == 300 and max(ev.token_id for ev in h) < tok.vocab_size
    # Logprobs are normalized over the sampleable ids: log-softmax of logits[:489], float64
    # vs the sampler's float64 sum: agreement to 1e-5 (float32 logits ~1e1, 489 terms).
    lse = np.log(np.exp(logits[:tok.vocab_size].astype(np.float64)).sum())
    assert g[0].logprob == pytest.approx(float(logits[g[0].token_id]) - lse, abs=1e-5)
