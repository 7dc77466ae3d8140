"""OpenAI request JSON -> neutral parameters (pure functions of runtime/frontends/openai_wire)."""
from __future__ import annotations

import pytest

from gptoss_edge.runtime.api.errors import ApiError, ErrorKind
from gptoss_edge.runtime.api.requests import ChatMessage, ToolCall
from gptoss_edge.runtime.frontends import openai_wire as wire

LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {
    "type": "object", "properties": {"name": {"type": "string"}}}}}


def test_a_tool_round_trip_maps_to_harmony_roles():
    params, options = wire.chat_request({
        "model": "m", "stream": True, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be "},
                                              {"type": "text", "text": "brief."}]},
            {"role": "user", "content": "sig of len?"},
            {"role": "assistant", "content": None, "reasoning_content": "Look it up.",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "lookup", "arguments": "{\"name\": \"len\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "len(obj, /)"}],
        "tools": [LOOKUP], "max_completion_tokens": 9, "max_tokens": 100, "stop": "END",
        "seed": 4, "temperature": 0.5, "reasoning_effort": "high"})
    assert params.messages == (
        ChatMessage("developer", "Be brief."), ChatMessage("user", "sig of len?"),
        ChatMessage("assistant", "", "Look it up.", (ToolCall("lookup", "{\"name\": \"len\"}"),)),
        ChatMessage("tool", "len(obj, /)", name="lookup"))
    assert [t.name for t in params.tools] == ["lookup"]
    assert params.tools[0].parameters["properties"] == {"name": {"type": "string"}}
    assert (params.max_tokens, params.stop, params.reasoning_effort) == (9, ("END",), "high")
    assert (params.sampling.seed, params.sampling.temperature) == (4, 0.5)
    assert options.stream and options.include_usage and params.model == "m"


def test_defaults_and_tool_choice_none():
    params, options = wire.chat_request({"messages": [{"role": "user", "content": "hi"}],
                                         "tools": [LOOKUP], "tool_choice": "none"})
    assert params.tools == () and params.max_tokens == 0 and params.stop == ()
    assert params.sampling.temperature is None and params.reasoning_effort == "medium"
    assert not options.stream and params.model == ""


@pytest.mark.parametrize("body, fragment", [
    ([], "JSON object"),
    ({"messages": "hi"}, "messages: expected list"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5}, "presence"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "retrieval"}]},
     "tools[0]"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "a"}]}]}, "tool_calls[0]"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": [1]}}]}, "JSON object"),
])
def test_bad_requests_name_the_key(body, fragment):
    with pytest.raises(ApiError) as err:
        wire.chat_request(body)
    assert err.value.kind == ErrorKind.INVALID_ARGUMENT
    assert fragment in err.value.message


def test_error_body_shape():
    status, body = wire.error_body(ApiError(ErrorKind.NOT_FOUND, "model 'x' is not served"))
    assert status == 404
    assert body == {"error": {"message": "model 'x' is not served",
                              "type": "invalid_request_error", "param": None,
                              "code": "model_not_found"}}
