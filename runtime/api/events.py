"""What a request streams back, independent of the wire: deltas, then exactly one Finish."""
from __future__ import annotations

import dataclasses

FINISH_REASONS = ("stop", "length", "tool_calls", "cancelled")


@dataclasses.dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float                              # of the sampled token (raw logits)
    top: tuple[tuple[int, float], ...] = ()     # best alternatives, best first


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0                   # completion tokens in the analysis channel


@dataclasses.dataclass(frozen=True)
class ToolCallDelta:
    index: int                                  # which call of this reply (0, 1, ...)
    name: str                                   # set on the first fragment of a call only
    arguments: str                              # next fragment of the JSON arguments text


@dataclasses.dataclass(frozen=True)
class ChatDelta:
    kind: str                                   # reasoning | content | commentary | tool_call
    text: str = ""                              # reasoning / content / commentary text
    tool_call: ToolCallDelta | None = None
    logprobs: tuple[TokenLogprob, ...] = ()     # tokens behind this delta, when asked


@dataclasses.dataclass(frozen=True)
class GenerateChunk:
    token_ids: tuple[int, ...]
    text: str                                   # UTF-8 safe: a split character waits
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclasses.dataclass(frozen=True)
class Finish:
    reason: str                                 # one of FINISH_REASONS
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] = ()     # chat: tokens not shown in any delta
