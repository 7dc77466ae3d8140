"""The TensorRT-target graph at the deployment precision (fp16 blocks), evaluated by the reference
backend, against the exact oracles on the standard case of tests/test_parity.py (batch of 3:
457, 403, 29 tokens, one batched prefill step, 16 batched teacher-forced decode steps).

fp16 is not bounded by a per-position maximum: where the fp16-rounded hidden state flips a
near-tied top-2 routing decision, that position's logits legitimately move by O(logit scale).
The bounds are on the distribution instead (measured figures printed with -s)."""
from __future__ import annotations

import numpy as np
import pytest

from test_parity import MAX_POSITIONS, Target, _reference_backend, compile_engine, run_standard_case


@pytest.fixture(scope="module")
def fp16_logits(tiny_checkpoint, oracle_case, tmp_path_factory):
    target = Target("trt-ref-fp16", ("--target", "tensorrt", "--precision", "fp16", "--max-batch", "3",
                                     "--max-step-tokens", "512"), _reference_backend, (), None)
    engine = compile_engine(tiny_checkpoint.hf, tmp_path_factory.mktemp("fp16") / "engine", target)
    backend = _reference_backend(engine, max_slots=3, max_context=max(len(r.tokens) for r in oracle_case.runs),
                                 max_step_tokens=max(r.prompt_len for r in oracle_case.runs))
    return run_standard_case(backend, oracle_case)


def test_fp16_blocks_against_exact_oracles(fp16_logits, oracle_case):
    for row, (got, run, openai) in enumerate(zip(fp16_logits, oracle_case.runs, oracle_case.openai_logits)):
        for name, ref in (("HF", run.logits), ("OpenAI", openai)):
            err = np.abs(got.astype(np.float64) - ref).max(axis=1)       # per position
            far = float(np.mean(err > 0.5))
            agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
            print(f"fp16 row {row} vs {name}: median {np.median(err):.3g} p95 {np.percentile(err, 95):.3g} "
                  f"max {err.max():.3g}, {100 * far:.1f}% positions > 0.5, argmax agree {100 * agree:.1f}%")
            # Typical position: 11-bit rounding of ~20 block inputs/weights/outputs on O(1) values,
            # ~1e-3 relative of the logit scale (~9): measured median ~0.006-0.015; bound 0.05.
            assert np.median(err) < 0.05
            # Routing flips: a few positions per hundred at most (measured ~1%); bound 5%.
            assert far < 0.05
            # Greedy choices follow the oracle except at those flips: bound 95% agreement.
            assert agree > 0.95
