"""Chat end to end through the real server and harmony parser, driven by a scripted model
(tests/scripted_backend.py): reasoning vs final, structured tool calls, stop strings, usage,
malformed output ending only its own stream, and the bad-input statuses of Chat."""
from __future__ import annotations

import json

import grpc
import pytest

from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from scripted_backend import ScriptedBackend, harmony_ids
from serving_helpers import ServerThread, model_info, run_parallel, wait_until

SCRIPTS = {
    "KEY_ANSWER": "<|channel|>analysis<|message|>User asks about len. Easy.<|end|>"
                  "<|start|>assistant<|channel|>final<|message|>len returns the number of "
                  "items in a container.<|return|>",
    "KEY_TOOL": "<|channel|>analysis<|message|>Need the signature.<|end|>"
                "<|start|>assistant<|channel|>commentary to=functions.lookup_signature "
                "<|constrain|>json<|message|>{\"name\": \"os.path.join\"}<|call|>",
    "KEY_RESULT": "<|channel|>final<|message|>It takes a path and more parts.<|return|>",
    "KEY_BROKEN": "<|channel|>final<|message|>fine so far<|start|>oops<|return|>",
    "KEY_LONG": "<|channel|>final<|message|>" + "word " * 200 + "<|return|>",
}
TOOL = pb.Tool(name="lookup_signature", description="Signature of a stdlib function",
               parameters_json=json.dumps({"type": "object", "properties": {
                   "name": {"type": "string", "description": "dotted name"}},
                   "required": ["name"]}))


@pytest.fixture(scope="module")
def server(tiny_tokenizer, tmp_path_factory):
    backend = ScriptedBackend(tiny_tokenizer, SCRIPTS, max_slots=4, max_context=1024)
    sock = tmp_path_factory.mktemp("sock") / "chat.sock"
    st = ServerThread(backend, tiny_tokenizer, ServeOptions(listen=f"unix:{sock}",
                                                            model_name="scripted"))
    yield st
    st.stop()


@pytest.fixture
def stub(server):
    with server.channel() as ch:
        yield llm_pb2_grpc.LLMStub(ch)


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


def collect(responses) -> dict:
    out = {"reasoning": "", "content": "", "calls": {}, "finish": None, "order": []}
    for r in responses:
        kind = r.WhichOneof("delta")
        out["order"].append(kind)
        if kind in ("reasoning", "content"):
            out[kind] += getattr(r, kind)
        elif kind == "tool_call":
            call = out["calls"].setdefault(r.tool_call.index, {"name": "", "arguments": ""})
            call["name"] += r.tool_call.name
            call["arguments"] += r.tool_call.arguments
        elif kind == "finish":
            out["finish"] = r.finish
    return out


def test_reasoning_and_final_answer_are_tagged(stub, tiny_tokenizer):
    got = collect(stub.Chat(pb.ChatRequest(messages=[user("KEY_ANSWER what does len do?")])))
    assert got["reasoning"] == "User asks about len. Easy."
    assert got["content"] == "len returns the number of items in a container."
    assert got["order"].index("content") > max(i for i, k in enumerate(got["order"])
                                                if k == "reasoning")
    assert got["order"][-1] == "finish" and got["finish"].reason == pb.FINISH_REASON_STOP
    usage = got["finish"].usage
    assert usage.completion_tokens == len(harmony_ids(tiny_tokenizer, SCRIPTS["KEY_ANSWER"]))
    assert 0 < usage.reasoning_tokens < usage.completion_tokens
    assert usage.prompt_tokens > 0


def test_tool_call_is_structured(stub):
    got = collect(stub.Chat(pb.ChatRequest(messages=[user("KEY_TOOL how to join paths")],
                                           tools=[TOOL])))
    assert got["finish"].reason == pb.FINISH_REASON_TOOL_CALLS
    assert got["calls"] == {0: {"name": "lookup_signature",
                                "arguments": "{\"name\": \"os.path.join\"}"}}
    assert json.loads(got["calls"][0]["arguments"]) == {"name": "os.path.join"}
    assert got["content"] == ""


def test_tool_result_round_trip(stub):
    messages = [user("how to join paths"),
                pb.Message(role=pb.ROLE_ASSISTANT, reasoning="Need the signature.",
                           tool_calls=[pb.ToolCall(name="lookup_signature",
                                                   arguments="{\"name\": \"os.path.join\"}")]),
                pb.Message(role=pb.ROLE_TOOL, name="lookup_signature",
                           content="KEY_RESULT join(a, *p)")]
    got = collect(stub.Chat(pb.ChatRequest(messages=messages, tools=[TOOL])))
    assert got["content"] == "It takes a path and more parts."
    assert got["finish"].reason == pb.FINISH_REASON_STOP


def test_stop_string_on_final_content(stub):
    got = collect(stub.Chat(pb.ChatRequest(messages=[user("KEY_ANSWER len?")],
                                           stop=["number of"])))
    assert got["content"] == "len returns the "
    assert got["finish"].reason == pb.FINISH_REASON_STOP


def test_max_tokens_gives_length(stub):
    got = collect(stub.Chat(pb.ChatRequest(messages=[user("KEY_LONG talk")], max_tokens=10)))
    assert got["finish"].reason == pb.FINISH_REASON_LENGTH
    assert got["finish"].usage.completion_tokens == 10


def test_logprobs_ride_with_deltas(stub, tiny_tokenizer):
    responses = list(stub.Chat(pb.ChatRequest(messages=[user("KEY_RESULT x")], logprobs=True,
                                              top_logprobs=2)))
    lps = [lp for r in responses for lp in r.logprobs]
    assert [lp.token_id for lp in lps] == harmony_ids(tiny_tokenizer, SCRIPTS["KEY_RESULT"])
    assert all(len(lp.top) == 2 and lp.top[0].token_id == lp.token_id for lp in lps)


def test_malformed_output_ends_only_its_stream(stub, server):
    def broken():
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Chat(pb.ChatRequest(messages=[user("KEY_BROKEN hi")])))
        return err.value

    def good():
        return collect(stub.Chat(pb.ChatRequest(messages=[user("KEY_LONG talk")])))

    err, ok = run_parallel([broken, good])
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "not valid harmony" in err.details() and "<|start|>" in err.details()
    assert ok["content"] == "word " * 200 and ok["finish"].reason == pb.FINISH_REASON_STOP
    assert wait_until(lambda: model_info(stub).kv_slots_used == 0)


@pytest.mark.parametrize("request_, fragment", [
    (pb.ChatRequest(), "messages: at least one message"),
    (pb.ChatRequest(messages=[pb.Message(content="hi")]), "messages[0].role"),
    (pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER)]), "messages[0].content"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")],
                    tools=[pb.Tool(name="f", parameters_json="{not json")]), "not valid JSON"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")],
                    tools=[pb.Tool(name="f", parameters_json='{"type": "string"}')]), "tools[0]"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")], tools=[pb.Tool(name="bad name!")]),
     "tools[0]"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")],
                    sampling=pb.SamplingParams(temperature=-1)), "temperature"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")], sampling=pb.SamplingParams(top_p=0)),
     "top_p"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")], top_logprobs=1000), "logprobs"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER")], stop=[""]), "stop[0]"),
    (pb.ChatRequest(messages=[user("KEY_ANSWER " + "x " * 2000)]), "context holds 1024"),
])
def test_chat_bad_input_is_invalid_argument(stub, request_, fragment):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Chat(request_))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert fragment in err.value.details()


def test_unknown_model_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Chat(pb.ChatRequest(model="gpt-5", messages=[user("KEY_ANSWER")])))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'gpt-5'" in err.value.details() and "'scripted'" in err.value.details()
