"""What the gRPC services share: the served model (backend + tokenizer + scheduler), the drain
gate, and the mapping of every refusal to one precise gRPC status code."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import grpc

from gptoss_edge.runtime.engine.backend import Backend
from gptoss_edge.runtime.frontends.metrics import ServerMetrics
from gptoss_edge.runtime.engine.scheduler import Overloaded, Scheduler, SchedulerClosed


class RequestError(Exception):
    """A refused request: gRPC status code + a message naming the offending field."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a service answers with when `exc` ends a request."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, SchedulerClosed):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, ValueError):             # SamplingParams.validate and friends
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


@dataclasses.dataclass
class ServedModel:
    name: str
    backend: Backend
    tokenizer: Any | None          # runtime.tokenizer.Tokenizer; None: token ids only
    scheduler: Scheduler
    metrics: ServerMetrics
    draining: bool = False

    @property
    def info(self):
        return self.backend.info

    def check_name(self, requested: str) -> None:
        if requested and requested != self.name:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {requested!r} is not served here (serving {self.name!r})")

    def check_accepting(self) -> None:
        if self.draining:
            raise RequestError(grpc.StatusCode.UNAVAILABLE,
                               "server is draining (shutting down); not accepting new requests")

    def need_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"engine {self.name!r} has no tokenizer; send token ids")
        return self.tokenizer

    def check_prompt(self, prompt: list[int]) -> None:
        """Prompt must be non-empty, in the vocabulary, and leave room for one token."""
        if not prompt:
            raise invalid("prompt is empty")
        vocab = self.info.config.vocab_size
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise invalid(f"prompt token id {bad} is outside the vocabulary [0, {vocab})")
        if len(prompt) > self.info.max_context:
            raise invalid(f"prompt is {len(prompt)} tokens; the context holds "
                          f"{self.info.max_context}")

    def max_new_tokens(self, prompt_len: int, requested: int) -> int:
        room = self.info.max_context - prompt_len + 1   # the last sampled token needs no slot
        return max(1, min(requested, room) if requested else room)


def parse_tool_schema(index: int, name: str, parameters_json: str) -> dict | None:
    """A tool's parameters as sent on the wire (JSON text) -> the schema object (None: no
    arguments). The schema itself is validated by harmony.validate_tools when rendering."""
    if not parameters_json.strip():
        return None
    try:
        schema = json.loads(parameters_json)
    except json.JSONDecodeError as e:
        raise invalid(f"tools[{index}] ({name!r}).parameters_json is not valid JSON: {e}") from None
    if not isinstance(schema, dict):
        raise invalid(f"tools[{index}] ({name!r}).parameters_json must be a JSON object "
                      f"(a JSON Schema), got {type(schema).__name__}")
    return schema
