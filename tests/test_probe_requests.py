"""Bad requests a probe of the running server found answered with UNKNOWN or INTERNAL (or
silently accepted): each now gets a status we chose, naming the problem."""
from __future__ import annotations

import json
import struct

import grpc
import pytest

from gptoss_edge.kserve import grpc_service_pb2 as kpb
from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from conftest import ort_backend
from scripted_backend import ScriptedBackend
from serving_helpers import ServerThread, wait_until

SCRIPTS = {"KEY_OK": "<|channel|>final<|message|>Done.<|return|>"}
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def server(tiny_tokenizer, tmp_path_factory):
    sock = tmp_path_factory.mktemp("probe") / "s.sock"
    st = ServerThread(ScriptedBackend(tiny_tokenizer, SCRIPTS, max_slots=2, max_context=256),
                      tiny_tokenizer, ServeOptions(listen=f"unix:{sock}", model_name="scripted"))
    yield st
    st.stop()


@pytest.fixture
def channel(server):
    with server.channel() as ch:
        yield ch


def raw_call(channel, method: str, data: bytes, streaming: bool):
    """Send `data` as the request bytes of `method`, whatever they are."""
    if streaming:
        call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        return list(call(data, timeout=10))
    return channel.unary_unary(method, request_serializer=None,
                               response_deserializer=None)(data, timeout=10)


@pytest.mark.parametrize("method, streaming", [
    ("/gptoss_edge.v1.LLM/Chat", True), ("/gptoss_edge.v1.LLM/Generate", True),
    ("/gptoss_edge.v1.LLM/Tokenize", False), ("/inference.GRPCInferenceService/ModelInfer", False),
])
def test_undecodable_bytes_are_invalid_argument(channel, method, streaming):
    with pytest.raises(grpc.RpcError) as err:
        raw_call(channel, method, b"\x0a\xff\xff\xff\xff\x0f", streaming)   # truncated field
    assert err.value.code() == INVALID, err.value.details()
    assert "not a valid" in err.value.details()


def test_undecodable_bytes_in_a_kserve_stream_are_invalid_argument(channel):
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                 request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        list(call(iter([b"\x0a\xff\xff"]), timeout=10))
    assert err.value.code() == INVALID


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


@pytest.mark.parametrize("effort", [4, 99, -1, 2**31 - 1])
def test_out_of_range_reasoning_effort_is_invalid_argument(channel, effort):
    with pytest.raises(grpc.RpcError) as err:
        list(llm_pb2_grpc.LLMStub(channel).Chat(pb.ChatRequest(messages=[user("KEY_OK")],
                                                               reasoning_effort=effort)))
    assert err.value.code() == INVALID and "reasoning_effort" in err.value.details()


def test_deeply_nested_tool_schema_is_invalid_argument(channel):
    deep = '{"type": "object", "properties": {"a": ' * 1000 + "{}" + "}}" * 1000
    tool = pb.Tool(name="f", parameters_json=deep)
    with pytest.raises(grpc.RpcError) as err:
        list(llm_pb2_grpc.LLMStub(channel).Chat(pb.ChatRequest(messages=[user("KEY_OK")],
                                                               tools=[tool])))
    assert err.value.code() == INVALID and "nests deeper" in err.value.details()


def infer(channel, inputs, raw=None):
    req = kpb.ModelInferRequest(model_name="scripted")
    for name, dtype, contents in inputs:
        t = req.inputs.add(name=name, datatype=dtype, shape=[1])
        if contents is not None:
            t.contents.CopyFrom(contents)
    if raw is not None:
        req.raw_input_contents.extend(raw)
    stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=kpb.ModelInferRequest.SerializeToString,
                               response_deserializer=kpb.ModelInferResponse.FromString)
    return stub(req, timeout=10)


def text_raw(text: bytes) -> bytes:
    return struct.pack("<I", len(text)) + text


@pytest.mark.parametrize("inputs, raw, fragment", [
    ([("text_input", "BYTES", None)], [struct.pack("<I", 50) + b"short"], "declares 50 bytes"),
    ([("text_input", "BYTES", None)], [text_raw(b"KEY_OK") + b"\x01\x00"],
     "ends inside a length prefix"),
    ([("text_input", "BYTES", None), ("max_tokens", "INT32", None)],
     [text_raw(b"KEY_OK"), b"\x05\x00\x00"], "not a multiple of 4"),
    ([("text_input", "INT32", kpb.InferTensorContents(int_contents=[5]))], None,
     "'text_input' must be BYTES"),
    ([("text_input", "BYTES", kpb.InferTensorContents(bytes_contents=[b"KEY_OK"])),
      ("max_tokens", "BYTES", kpb.InferTensorContents(bytes_contents=[b"7"]))], None,
     "'max_tokens' must be"),
])
def test_malformed_kserve_tensors_are_invalid_argument(channel, inputs, raw, fragment):
    with pytest.raises(grpc.RpcError) as err:
        infer(channel, inputs, raw)
    assert err.value.code() == INVALID, err.value.details()
    assert fragment in err.value.details()


def test_well_formed_kserve_raw_request_still_works(channel):
    out = infer(channel, [("text_input", "BYTES", None), ("max_tokens", "INT32", None)],
                [text_raw(b"KEY_OK"), struct.pack("<i", 4)])
    (n,) = struct.unpack_from("<I", out.raw_output_contents[0])
    assert n == len(out.raw_output_contents[0]) - 4 and n > 0


def test_chat_on_a_random_weight_engine_says_so_in_one_line(tiny_engine, tiny_tokenizer,
                                                           tmp_path):
    st = ServerThread(ort_backend(tiny_engine, max_slots=1, max_context=256,
                                  max_step_tokens=32), tiny_tokenizer,
                      ServeOptions(listen=f"unix:{tmp_path}/s.sock", model_name="tiny"))
    try:
        with st.channel() as ch:
            stub = llm_pb2_grpc.LLMStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Chat(pb.ChatRequest(messages=[user("hello")])))
            details = err.value.details()
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert "does not produce harmony" in details and "\n" not in details
            assert wait_until(lambda: stub.ModelInfo(pb.ModelInfoRequest()).kv_slots_used == 0)
    finally:
        st.stop()


def test_chat_on_a_random_weight_engine_over_http_too(tiny_engine, tiny_tokenizer, tmp_path):
    openai = pytest.importorskip("openai")
    st = ServerThread(ort_backend(tiny_engine, max_slots=1, max_context=256,
                                  max_step_tokens=32), tiny_tokenizer,
                      ServeOptions(listen=f"unix:{tmp_path}/s.sock", model_name="tiny",
                                   http="127.0.0.1:0"))
    try:
        client = openai.OpenAI(base_url=st.server.http.address + "/v1", api_key="x",
                               max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="tiny", messages=[{"role": "user",
                                                                    "content": "hello"}])
        assert "does not produce harmony" in err.value.body["message"]
        assert err.value.body["code"] == "model_output_not_harmony"
        assert json.dumps(err.value.body)
    finally:
        st.stop()
