"""OpenAI chat-completions JSON <-> the neutral request API (pure functions, no I/O).

Request: `model`, `messages` (system/developer/user/assistant/tool; text content or text
parts; assistant `tool_calls` and `reasoning_content`; tool results as role "tool" with
`tool_call_id`), `tools` (type "function"), `tool_choice` ("auto"/"none"), `reasoning_effort`,
`max_completion_tokens`/`max_tokens`, `stop`, `seed`, `temperature`, `top_p` (+ `top_k`, as vLLM),
`logprobs`/`top_logprobs`, `stream` + `stream_options.include_usage`. Unknown keys are ignored;
known keys of the wrong type or value are refused naming the key. Unset temperature is greedy,
the same default as every other front end (OpenAI's cloud samples at 1)."""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from gptoss_edge.runtime.api import events as ev
from gptoss_edge.runtime.api.errors import ApiError, ErrorKind, invalid
from gptoss_edge.runtime.api.requests import (REASONING_EFFORTS, ChatMessage, ChatParams,
                                              Sampling, ToolCall, ToolSpec, check_json_depth,
                                              tool_schema)

HTTP_STATUS = {   # ErrorKind -> (HTTP status, OpenAI error type, code)
    ErrorKind.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.FAILED_PRECONDITION: (400, "invalid_request_error", "unsupported_by_engine"),
    ErrorKind.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "server_busy"),
    ErrorKind.UNAVAILABLE: (503, "service_unavailable", "draining"),
    ErrorKind.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    ErrorKind.MODEL_OUTPUT: (500, "server_error", "model_output_not_harmony"),
    ErrorKind.INTERNAL: (500, "server_error", None),
}
FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "cancelled": "stop"}
_UNSUPPORTED = ("presence_penalty", "frequency_penalty")   # accepted only when 0


@dataclasses.dataclass(frozen=True)
class ChatOptions:
    """What the HTTP layer needs beyond the neutral parameters."""
    stream: bool = False
    include_usage: bool = False
    model: str = ""


def error_body(err: ApiError, status: int | None = None) -> tuple[int, dict]:
    code, kind, tag = HTTP_STATUS[err.kind]
    return status or code, {"error": {"message": err.message, "type": kind, "param": None,
                                      "code": tag}}


# ---- request ----------------------------------------------------------------------------------
def _get(body: dict, key: str, types, default=None, where: str = ""):
    value = body.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _tuple(types))
    if not ok:
        names = " or ".join(t.__name__ for t in _tuple(types))
        raise invalid(f"{where or key}: expected {names}, got {type(value).__name__}")
    return value


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _text(content: Any, where: str) -> str:
    """OpenAI content: a string, null, or a list of {type: "text", text} parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise invalid(f"{where}: expected a string or a list of text parts")
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or \
                not isinstance(part.get("text"), str):
            raise invalid(f"{where}[{j}]: only {{\"type\": \"text\", \"text\": ...}} parts are "
                          "supported (this model reads text only)")
        out.append(part["text"])
    return "".join(out)


def _tool_calls(calls: Any, where: str, names_by_id: dict[str, str]) -> tuple[ToolCall, ...]:
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise invalid(f"{where}: expected a list")
    out = []
    for j, call in enumerate(calls):
        w = f"{where}[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise invalid(f"{w}: expected {{\"type\": \"function\", \"function\": {{name, "
                          "arguments}}")
        fn = call["function"]
        name = _get(fn, "name", str, "", f"{w}.function.name")
        arguments = _get(fn, "arguments", str, "", f"{w}.function.arguments")
        call_id = _get(call, "id", str, "", f"{w}.id")
        if call_id:
            names_by_id[call_id] = name
        out.append(ToolCall(name, arguments or "{}"))
    return tuple(out)


def chat_message(i: int, m: Any, names_by_id: dict[str, str]) -> ChatMessage:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise invalid(f"{where}: expected an object with a role")
    role = _get(m, "role", str, "", f"{where}.role")
    content = _text(m.get("content"), f"{where}.content")
    name = _get(m, "name", str, "", f"{where}.name")
    if role == "assistant":
        reasoning = _get(m, "reasoning_content", str, "", f"{where}.reasoning_content") or \
            _get(m, "reasoning", str, "", f"{where}.reasoning")
        calls = _tool_calls(m.get("tool_calls"), f"{where}.tool_calls", names_by_id)
        return ChatMessage("assistant", content, reasoning, calls)
    if role == "tool":
        call_id = _get(m, "tool_call_id", str, "", f"{where}.tool_call_id")
        name = name or names_by_id.get(call_id, "")
        if not name:
            raise invalid(f"{where}.tool_call_id: {call_id!r} matches no earlier assistant "
                          "tool call (send the tool_calls message first, or `name`)")
    return ChatMessage(role, content, name=name)


def tool_spec(i: int, t: Any) -> ToolSpec:
    where = f"tools[{i}]"
    if not isinstance(t, dict) or t.get("type", "function") != "function" or \
            not isinstance(t.get("function"), dict):
        raise invalid(f"{where}: expected {{\"type\": \"function\", \"function\": {{name, "
                      "description, parameters}}")
    fn = t["function"]
    name = _get(fn, "name", str, "", f"{where}.function.name")
    description = _get(fn, "description", str, "", f"{where}.function.description")
    return ToolSpec(name, description, tool_schema(i, name, fn.get("parameters")))


def _max_tokens(body: dict) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = _get(body, key, int)
        if value is not None:
            if value < 1:
                raise invalid(f"{key}: must be >= 1, got {value}")
            return value
    return 0


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise invalid("stop: expected a string or a list of strings")


def _sampling(body: dict) -> Sampling:
    temperature = _get(body, "temperature", (int, float))
    if temperature is not None and not 0 <= temperature <= 2:
        raise invalid(f"temperature: must be in [0, 2], got {temperature}")
    return Sampling(temperature=temperature, top_p=_get(body, "top_p", (int, float)),
                    top_k=_get(body, "top_k", int), seed=_get(body, "seed", int))


def _check_supported(body: dict) -> None:
    for key in _UNSUPPORTED:
        if _get(body, key, (int, float), 0) != 0:
            raise invalid(f"{key}: not supported here (only 0)")
    if _get(body, "n", int, 1) != 1:
        raise invalid("n: only 1 choice per request is supported")
    if _get(body, "logit_bias", dict):
        raise invalid("logit_bias: not supported here")
    fmt = _get(body, "response_format", dict)
    if fmt and fmt.get("type") not in (None, "text"):
        raise invalid("response_format: only {\"type\": \"text\"} is supported")


def chat_request(body: Any) -> tuple[ChatParams, ChatOptions]:
    """Decoded request JSON -> (neutral parameters, HTTP options). ApiError names the key."""
    if not isinstance(body, dict):
        raise invalid("request body: expected a JSON object")
    check_json_depth(body, "request body")
    _check_supported(body)
    messages = _get(body, "messages", list)
    if not messages:
        raise invalid("messages: at least one message is required")
    names_by_id: dict[str, str] = {}
    parsed = tuple(chat_message(i, m, names_by_id) for i, m in enumerate(messages))
    tools = _get(body, "tools", list, [])
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise invalid("tool_choice: only \"auto\" and \"none\" are supported")
    effort = _get(body, "reasoning_effort", str, "medium")
    if effort not in REASONING_EFFORTS:
        raise invalid(f"reasoning_effort: one of {', '.join(REASONING_EFFORTS)}, got {effort!r}")
    top_logprobs = _get(body, "top_logprobs", int, 0)
    stream_options = _get(body, "stream_options", dict, {})
    params = ChatParams(
        messages=parsed,
        tools=() if choice == "none" else tuple(tool_spec(i, t) for i, t in enumerate(tools)),
        model=_get(body, "model", str, ""), reasoning_effort=effort, sampling=_sampling(body),
        stop=_stop(body), max_tokens=_max_tokens(body),
        logprobs=_get(body, "logprobs", bool, False), top_logprobs=top_logprobs)
    options = ChatOptions(stream=_get(body, "stream", bool, False),
                          include_usage=bool(stream_options.get("include_usage")),
                          model=params.model)
    return params, options


# ---- response ---------------------------------------------------------------------------------
def usage_json(u: ev.Usage) -> dict:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def logprobs_json(lps, tokenizer) -> list[dict]:
    def entry(token_id: int, logprob: float) -> dict:
        raw = tokenizer.token_bytes(token_id)
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob,
                "bytes": list(raw)}
    return [dict(entry(lp.token_id, lp.logprob),
                 top_logprobs=[entry(t, v) for t, v in lp.top]) for lp in lps]


class Completion:
    """One chat completion being answered: ids, streamed chunks, or the collected message."""

    def __init__(self, model_name: str, tokenizer, want_logprobs: bool):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model_name
        self.tokenizer = tokenizer
        self.want_logprobs = want_logprobs
        self.call_ids: dict[int, str] = {}
        self.content, self.reasoning, self.logprobs = [], [], []
        self.calls: dict[int, dict] = {}

    def _call_id(self, index: int) -> str:
        return self.call_ids.setdefault(index, f"call_{uuid.uuid4().hex[:24]}")

    def _envelope(self, choices: list, **extra) -> dict:
        return dict(id=self.id, object="chat.completion.chunk", created=self.created,
                    model=self.model, choices=choices, **extra)

    def delta(self, e: ev.ChatDelta) -> dict:
        """One neutral delta -> the OpenAI `delta` object of a chunk."""
        if e.kind == "reasoning":
            return {"reasoning_content": e.text}
        if e.kind in ("content", "commentary"):
            return {"content": e.text}
        t = e.tool_call
        call: dict[str, Any] = {"index": t.index, "function": {"arguments": t.arguments}}
        if t.name:
            call.update(id=self._call_id(t.index), type="function")
            call["function"]["name"] = t.name
        return {"tool_calls": [call]}

    def chunk(self, e, first: bool) -> dict:
        finish = isinstance(e, ev.Finish)
        delta = {} if finish else self.delta(e)
        if first:
            delta = {"role": "assistant", **delta}
        return self._envelope([{"index": 0, "delta": delta,
                                "finish_reason": FINISH[e.reason] if finish else None,
                                "logprobs": self._lp(e.logprobs)}])

    def usage_chunk(self, usage: ev.Usage) -> dict:
        return self._envelope([], usage=usage_json(usage))

    def _lp(self, lps) -> dict | None:
        if not self.want_logprobs:
            return None
        return {"content": logprobs_json(lps, self.tokenizer)}

    def add(self, e: ev.ChatDelta) -> None:
        """Collect a delta for the non-streamed answer."""
        self.logprobs.extend(e.logprobs)
        if e.kind == "reasoning":
            self.reasoning.append(e.text)
        elif e.kind in ("content", "commentary"):
            self.content.append(e.text)
        else:
            t = e.tool_call
            call = self.calls.setdefault(t.index, {"id": self._call_id(t.index),
                                                   "type": "function",
                                                   "function": {"name": "", "arguments": ""}})
            call["function"]["name"] += t.name
            call["function"]["arguments"] += t.arguments

    def response(self, finish: ev.Finish) -> dict:
        self.logprobs.extend(finish.logprobs)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None,
                                   "reasoning_content": "".join(self.reasoning) or None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return dict(id=self.id, object="chat.completion", created=self.created,
                    model=self.model, usage=usage_json(finish.usage),
                    choices=[{"index": 0, "message": message,
                              "finish_reason": FINISH[finish.reason],
                              "logprobs": self._lp(self.logprobs)}])


def models_json(name: str, created: int) -> dict:
    return {"object": "list", "data": [model_json(name, created)]}


def model_json(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "gptoss-edge"}
