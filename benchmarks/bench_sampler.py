"""Sampler cost per token at the gpt-oss vocabulary (201088), as a ratio against one plain
float32 log-softmax over the same logits measured in the same run (the least any sampler that
reports logprobs must do). Prints figures, asserts nothing.

    python benchmarks/bench_sampler.py
"""
from __future__ import annotations

import timeit

import numpy as np

from gptoss_edge.runtime.engine.sampler import SamplingParams, Sampler

VOCAB = 201088


def per_call_ms(fn, number: int = 50) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(VOCAB).astype(np.float32) * 3      # worst case for top-p
    peaked = flat.copy()
    peaked[:20] += 25                                             # like a trained model
    baseline = per_call_ms(lambda: peaked - np.log(np.exp(peaked - peaked.max()).sum()))
    print(f"baseline log-softmax: {baseline:.3f} ms")
    configs = {"greedy": SamplingParams(temperature=0),
               "temperature 0.8": SamplingParams(temperature=0.8, seed=1),
               "top_k 50": SamplingParams(top_k=50, seed=1),
               "top_p 0.9": SamplingParams(top_p=0.9, seed=1),
               "top_p 0.9 + logprobs 5": SamplingParams(top_p=0.9, logprobs=5, seed=1)}
    for name, params in configs.items():
        for label, logits in (("peaked", peaked), ("flat", flat)):
            sampler = Sampler(params)
            ms = per_call_ms(lambda: sampler.sample(logits), number=10 if label == "flat" else 50)
            print(f"{name:24s} {label:6s} {ms:7.3f} ms/token  {ms / baseline:6.1f}x baseline")


if __name__ == "__main__":
    main()
