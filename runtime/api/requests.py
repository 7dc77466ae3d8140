"""Request parameters, independent of the wire: what a front end decodes its request into.
Plain frozen dataclasses; validation that needs the served model lives in service.py."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from gptoss_edge.runtime.api.errors import invalid

REASONING_EFFORTS = ("low", "medium", "high")
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_JSON_DEPTH = 64          # tool schemas and arguments nest far less; deeper is refused


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Unset (None) fields take the server defaults: greedy when temperature is None or 0."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str                  # JSON text, as the model wrote it


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    role: str                       # one of ROLES
    content: str = ""
    reasoning: str = ""             # assistant: earlier analysis-channel text
    tool_calls: tuple[ToolCall, ...] = ()   # assistant: calls it made
    name: str = ""                  # tool: which tool produced `content`


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict | None = None  # JSON Schema object of the arguments; None: no arguments


@dataclasses.dataclass(frozen=True)
class ChatParams:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    model: str = ""                 # "" = the served model
    reasoning_effort: str = "medium"
    sampling: Sampling = Sampling()
    stop: tuple[str, ...] = ()      # stop strings on the final answer text
    max_tokens: int = 0             # 0 = until the context is full
    logprobs: bool = False
    top_logprobs: int = 0


@dataclasses.dataclass(frozen=True)
class GenerateParams:
    text: str | None = None         # exactly one of text / token_ids
    token_ids: tuple[int, ...] | None = None
    model: str = ""
    sampling: Sampling = Sampling()
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()   # added to the model's end-of-sequence token
    max_tokens: int = 0
    logprobs: bool = False
    top_logprobs: int = 0


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: no recursion limit to hit)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
    return depth - 1 if depth else 0


def load_json(text: str, where: str) -> Any:
    """JSON text from a request -> value; ApiError naming `where` when it is not JSON or nests
    deeper than MAX_JSON_DEPTH (Python's decoder would raise RecursionError further down)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid(f"{where} is not valid JSON: {e}") from None
    except RecursionError:
        raise invalid(f"{where} nests deeper than {MAX_JSON_DEPTH} levels") from None
    check_json_depth(value, where)
    return value


def check_json_depth(value: Any, where: str) -> None:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise invalid(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")


def tool_schema(index: int, name: str, schema: Any) -> dict | None:
    """A tool's decoded parameters -> the schema object (None: no arguments). The schema itself
    is validated by harmony.validate_tools when rendering."""
    where = f"tools[{index}] ({name!r}).parameters"
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise invalid(f"{where} must be a JSON object (a JSON Schema), got "
                      f"{type(schema).__name__}")
    check_json_depth(schema, where)
    return schema
