"""Token sampling for one request: greedy, temperature, top-k, top-p, seeded, with logprobs; and
stop strings matched across token boundaries.

Order per step (as in vLLM / HF): logits / temperature -> keep the top_k largest -> keep the
smallest prefix (by descending probability) whose mass reaches top_p -> renormalize -> draw.
Ties in ordering go to the lower token id, everywhere (greedy argmax included), so results never
depend on sort stability. Reported logprobs are log-softmax of the raw logits (before temperature
and filtering), like OpenAI's API.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

import numpy as np

MAX_LOGPROBS = 20
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
_PARTIAL_SORT = 1024    # top-p looks at this many best tokens first, the whole vocab only if needed
GREEDY_BELOW = 1e-5     # temperatures under this sample greedily (as vLLM): logits / T overflows


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0    # 0 (or < GREEDY_BELOW) = greedy
    top_p: float = 1.0          # in (0, 1]; 1 = off
    top_k: int = 0              # 0 = off
    seed: int | None = None     # same seed + same logits -> same tokens
    max_tokens: int = 512
    stop: tuple[str, ...] = ()  # stop strings (not included in the output)
    logprobs: int = 0           # top alternatives to report per token, 0..20

    def validate(self) -> "SamplingParams":
        """Raise ValueError naming the first bad field; returns self."""
        _check_number("temperature", self.temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        _check_number("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        _check_int("top_k", self.top_k, 0)
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
            if self.seed >= 2 ** 64:
                raise ValueError(f"seed must be < 2**64, got {self.seed}")
        _check_int("max_tokens", self.max_tokens, 1)
        _check_int("logprobs", self.logprobs, 0)
        if self.logprobs > MAX_LOGPROBS:
            raise ValueError(f"logprobs must be <= {MAX_LOGPROBS}, got {self.logprobs}")
        _check_stop(self.stop)
        return self


def _check_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_stop(stop) -> None:
    if isinstance(stop, str) or not isinstance(stop, (tuple, list)):
        raise ValueError(f"stop must be a sequence of strings, got {stop!r}")
    if len(stop) > MAX_STOP_STRINGS:
        raise ValueError(f"stop has {len(stop)} strings, at most {MAX_STOP_STRINGS} allowed")
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop[{i}] must be a non-empty string, got {s!r}")
        if len(s) > MAX_STOP_LENGTH:
            raise ValueError(f"stop[{i}] is {len(s)} characters long, at most {MAX_STOP_LENGTH}")


@dataclasses.dataclass(frozen=True)
class SampleResult:
    token_id: int
    logprob: float                             # of token_id under the raw logits
    top_logprobs: list[tuple[int, float]]      # best `logprobs` alternatives, best first


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits)
    return logits.astype(np.float64) - (float(top) + _log_sum_exp_shifted(logits, top))


def _log_sum_exp_shifted(logits: np.ndarray, top) -> float:
    return float(np.log(np.exp(logits - top).sum(dtype=np.float64)))


def _ranked(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`ids` ordered by descending value, ties by ascending id."""
    return ids[np.lexsort((ids, -values[ids]))]


def top_ids(values: np.ndarray, k: int) -> np.ndarray:
    """The k best ids by value (ties -> lower id), best first."""
    n = values.shape[0]
    if k >= n:
        return _ranked(values, np.arange(n))
    kth = np.partition(values, n - k)[n - k]          # k-th largest value
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)[: k - above.size]
    return _ranked(values, np.concatenate([above, tied]))


def candidate_weights(logits: np.ndarray, temperature: float, top_k: int, top_p: float
                      ) -> tuple[np.ndarray | None, np.ndarray]:
    """Ids surviving top-k then top-p at `temperature` (> 0) and their unnormalized weights
    exp((logit - max) / T). ids None = every id, weights in id order (no filter active); else
    ids best first. Ranking uses the raw logits, so equal logits tie-break by lower id."""
    n = logits.shape[0]
    top = np.max(logits)
    weigh = lambda x: np.exp((x - top) / np.float32(temperature))  # noqa: E731
    k = top_k if 0 < top_k < n else n
    if k == n and top_p >= 1.0:
        return None, weigh(logits)
    if k < n:
        ids = top_ids(logits, k)
        weights = weigh(logits[ids])
        if top_p >= 1.0:
            return ids, weights
        keep = _nucleus_size(weights, weights.sum(dtype=np.float64), top_p, complete=True)
        return ids[:keep], weights[:keep]
    full = weigh(logits)
    total = full.sum(dtype=np.float64)
    # The nucleus usually lies within the best few hundred ids: rank those first, all if not.
    for width in (min(n, _PARTIAL_SORT), n):
        ids = top_ids(logits, width)
        keep = _nucleus_size(full[ids], total, top_p, complete=width == n)
        if keep is not None:
            return ids[:keep], full[ids[:keep]]
    raise AssertionError("unreachable: the full ranking always holds the nucleus")


def _nucleus_size(sorted_weights: np.ndarray, total: float, top_p: float, complete: bool):
    """Smallest prefix whose mass reaches top_p; None if this (incomplete) prefix is too short."""
    cum = np.cumsum(sorted_weights, dtype=np.float64) / total
    keep = int(np.searchsorted(cum, top_p, side="left")) + 1
    if keep <= sorted_weights.size:
        return keep
    # Mass short of top_p: the nucleus needs more ids, or (complete) float rounding left
    # cum[-1] a hair below 1.
    return sorted_weights.size if complete else None


def candidates(logits: np.ndarray, temperature: float, top_k: int, top_p: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Surviving ids (best first, or id order when no filter is active) and their renormalized
    probabilities (float64, sum 1)."""
    logits = np.asarray(logits, dtype=np.float32)
    ids, weights = candidate_weights(logits, temperature, top_k, top_p)
    if ids is None:
        ids = np.arange(logits.shape[0])
    weights = weights.astype(np.float64)
    return ids, weights / weights.sum()


def draw(weights: np.ndarray, u: float, block: int = 4096) -> int:
    """Index i with probability weights[i] / sum(weights), for u uniform in [0, 1). Two-level
    inverse CDF (block sums, then one block) instead of a full-vocab float64 cumsum."""
    starts = np.arange(0, weights.shape[0], block)
    sums = np.add.reduceat(weights, starts, dtype=np.float64)
    cum = np.cumsum(sums)
    target = u * cum[-1]
    b = min(int(np.searchsorted(cum, target, side="right")), sums.size - 1)
    while sums[b] <= 0:     # float rounding put target past the last block with mass
        b -= 1
    inner = weights[starts[b]: starts[b] + block]
    local = np.cumsum(inner, dtype=np.float64)
    j = int(np.searchsorted(local, target - (cum[b - 1] if b else 0.0), side="right"))
    # side="right" never picks a zero weight; clamp only for rounding past the block's end.
    return int(starts[b]) + min(j, int(np.flatnonzero(inner)[-1]))


def _has_bad_values(logits: np.ndarray) -> bool:
    """NaN or +inf anywhere, or not a single finite value (-inf alone is a masked id, allowed)."""
    return bool(np.isnan(logits).any() or np.isposinf(logits).any() or not np.isfinite(logits).any())


class Sampler:
    """Samples one request's tokens; owns the request's random generator (seeded or not)."""

    def __init__(self, params: SamplingParams):
        self.params = params.validate()
        self._rng = np.random.default_rng(params.seed)

    def sample(self, logits: np.ndarray) -> SampleResult:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 1 or logits.size == 0:
            raise ValueError(f"logits must be a 1-d vector, got shape {logits.shape}")
        if not np.isfinite(logits).all() and _has_bad_values(logits):    # one pass when all finite
            raise ValueError("logits contain NaN or +inf, or no finite value")
        p = self.params
        if p.temperature < GREEDY_BELOW:
            token = int(np.argmax(logits))      # first maximum = lowest id
        else:
            ids, weights = candidate_weights(logits, p.temperature, p.top_k, p.top_p)
            index = draw(weights, self._rng.random())
            token = index if ids is None else int(ids[index])
        return self._result(logits, token)

    def _result(self, logits: np.ndarray, token: int) -> SampleResult:
        top = np.max(logits)
        lse = float(top) + _log_sum_exp_shifted(logits, top)
        alternatives = []
        if self.params.logprobs:
            alternatives = [(int(i), float(logits[i]) - lse)
                            for i in top_ids(logits, self.params.logprobs)]
        return SampleResult(token, float(logits[token]) - lse, alternatives)


@dataclasses.dataclass(frozen=True)
class StopMatch:
    text: str               # text that may be released now
    stop: str | None        # the stop string found (generation should end), else None


class StopStringMatcher:
    """Finds stop strings in streamed text whatever the chunking. feed() releases text that can
    no longer be part of a stop string and holds back a suffix that is a prefix of one. The stop
    that completes first (earliest end; the longest among those ending together) wins, which is
    what feeding the text one character at a time would find; text from its start on is dropped."""

    def __init__(self, stops: Sequence[str]):
        _check_stop(tuple(stops))
        self.stops = tuple(stops)
        self._held = ""
        self.stopped: str | None = None

    def feed(self, text: str) -> StopMatch:
        if self.stopped is not None:
            return StopMatch("", self.stopped)
        buffer = self._held + text
        found = self._first_stop(buffer)
        if found is not None:
            start, stop = found
            self._held = ""
            self.stopped = stop
            return StopMatch(buffer[:start], stop)
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return StopMatch(buffer[: len(buffer) - keep], None)

    def flush(self) -> str:
        """End of generation without a stop: release what was held back."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, buffer: str) -> tuple[int, str] | None:
        best = None     # (end, -length, start, stop)
        for stop in self.stops:
            start = buffer.find(stop)
            if start >= 0:
                key = (start + len(stop), -len(stop), start, stop)
                best = key if best is None or key < best else best
        return (best[2], best[3]) if best else None

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest
