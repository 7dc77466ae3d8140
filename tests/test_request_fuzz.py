"""A bounded, seeded mutation fuzz of raw requests against a real server (gRPC LLM + KServe,
and the OpenAI HTTP endpoint): every status a mangled request gets is one we chose (never
UNKNOWN, never INTERNAL except the model-output error, never a hang), and afterwards every KV
slot is free and a good request still works."""
from __future__ import annotations

import concurrent.futures
import json
import random
import struct

import grpc
import pytest

from gptoss_edge.kserve import grpc_service_pb2 as kpb
from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from scripted_backend import ScriptedBackend
from serving_helpers import ServerThread, wait_until

SEED = 20261205
GRPC_CASES = 480
HTTP_CASES = 160
SCRIPTS = {"KEY_OK": "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final"
                     "<|message|>Done.<|return|>"}
CHOSEN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
          grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
MODEL_OUTPUT = ("this engine's model does not produce harmony", "model output is not valid harmony")
TOOL = pb.Tool(name="lookup", description="d", parameters_json=json.dumps(
    {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))


def grpc_bases() -> list[tuple[str, bool, bytes]]:
    """(method, server-streaming, valid request bytes) to mutate."""
    chat = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_DEVELOPER, content="Be brief."),
                                    pb.Message(role=pb.ROLE_USER, content="KEY_OK hi")],
                          tools=[TOOL], stop=["zz"], max_tokens=24, logprobs=True, top_logprobs=2,
                          sampling=pb.SamplingParams(temperature=0.5, top_p=0.9, seed=3),
                          reasoning_effort=pb.REASONING_EFFORT_LOW)
    gen = pb.GenerateRequest(tokens=pb.TokenIds(ids=list(range(40, 60))), max_tokens=8,
                             stop_token_ids=[3], sampling=pb.SamplingParams(top_k=5))
    gen_text = pb.GenerateRequest(text="KEY_OK text", stop=["x"], max_tokens=8)
    infer = kpb.ModelInferRequest(model_name="scripted", id="r")
    for name, dtype in (("text_input", "BYTES"), ("max_tokens", "INT32"), ("stream", "BOOL")):
        infer.inputs.add(name=name, datatype=dtype, shape=[1])
    infer.raw_input_contents.extend([struct.pack("<I", 6) + b"KEY_OK", struct.pack("<i", 6),
                                     b"\x01"])
    llm = "/gptoss_edge.v1.LLM/"
    return [(llm + "Chat", True, chat.SerializeToString()),
            (llm + "Generate", True, gen.SerializeToString()),
            (llm + "Generate", True, gen_text.SerializeToString()),
            (llm + "Tokenize", False, pb.TokenizeRequest(text="KEY_OK").SerializeToString()),
            (llm + "Detokenize", False,
             pb.DetokenizeRequest(token_ids=[40, 41]).SerializeToString()),
            (llm + "ModelInfo", False, pb.ModelInfoRequest().SerializeToString()),
            ("/inference.GRPCInferenceService/ModelInfer", False, infer.SerializeToString())]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del b[i:i + rng.randint(1, 8)]
        elif op == 4:
            del b[i:]
        else:
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[min(i, j):max(i, j)][:64]
    return bytes(b)


@pytest.fixture(scope="module")
def server(tiny_tokenizer, tmp_path_factory):
    sock = tmp_path_factory.mktemp("fuzz") / "s.sock"
    backend = ScriptedBackend(tiny_tokenizer, SCRIPTS, max_slots=4, max_context=1024)
    st = ServerThread(backend, tiny_tokenizer, ServeOptions(
        listen=f"unix:{sock}", model_name="scripted", http="127.0.0.1:0", max_queue=8))
    yield st
    st.stop()


def chosen(code: grpc.StatusCode, details: str) -> bool:
    if code == grpc.StatusCode.INTERNAL:
        return details.startswith(MODEL_OUTPUT)
    return code in CHOSEN


def send_grpc(channel, method: str, streaming: bool, data: bytes):
    """-> (status, details) of one raw call."""
    try:
        if streaming:
            call = channel.unary_stream(method, request_serializer=None,
                                        response_deserializer=None)
            list(call(data, timeout=30))
        else:
            response = channel.unary_unary(method, request_serializer=None,
                                           response_deserializer=None)(data, timeout=30)
            if method.endswith("ModelInfer") is False:
                return grpc.StatusCode.OK, ""
            out = kpb.ModelInferResponse.FromString(response)
            assert out.raw_output_contents, out
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def test_mutated_grpc_requests_get_chosen_statuses(server):
    rng = random.Random(SEED)
    bases = grpc_bases()
    cases = [(m, s, mutate(d, rng)) for m, s, d in (rng.choice(bases) for _ in range(GRPC_CASES))]
    with server.channel() as ch, concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: send_grpc(ch, *c), cases))
    bad = [(c[0], code.name, details) for c, (code, details) in zip(cases, results)
           if not chosen(code, details)]
    assert not bad, bad[:5]
    codes = {code for code, _ in results}
    assert grpc.StatusCode.INVALID_ARGUMENT in codes and grpc.StatusCode.OK in codes  # both seen
    assert wait_until(lambda: server.server.model.scheduler.slots.used == 0)
    with server.channel() as ch:   # still serving
        ok = send_grpc(ch, *bases[0])
    assert ok == (grpc.StatusCode.OK, "")


HTTP_BASE = {"model": "scripted", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "KEY_OK hi"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "KEY_OK result"}],
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"name": {"type": "string"}}}}}],
    "max_tokens": 24, "stop": ["zz"], "seed": 1, "temperature": 0.5, "stream": False,
    "logprobs": True, "top_logprobs": 2, "reasoning_effort": "low"}
ODD_VALUES = [None, -1, 0, 2**70, 1.5e308, "", "x" * 300, [], {}, True, [[[[]]]], {"a": {}}]


def mutate_json(rng: random.Random) -> bytes:
    """Half the cases: one value somewhere replaced by an odd one; the rest: mangled bytes."""
    body = json.loads(json.dumps(HTTP_BASE))
    if rng.random() < 0.5:
        return mutate(json.dumps(body).encode(), rng)
    parent, key, node = None, None, body
    for _ in range(rng.randint(1, 4)):           # walk down to a random value
        if not isinstance(node, (dict, list)) or not node:
            break
        parent = node
        key = rng.choice(list(node.keys()) if isinstance(node, dict) else range(len(node)))
        node = node[key]
        if rng.random() < 0.3:
            break
    if parent is not None:
        parent[key] = rng.choice(ODD_VALUES)
    if rng.random() < 0.3:
        body["stream"] = True
    return json.dumps(body).encode()


def test_mutated_http_requests_get_chosen_statuses(server):
    httpx = pytest.importorskip("httpx2")
    rng = random.Random(SEED)
    url = server.server.http.address + "/v1/chat/completions"
    bodies = [mutate_json(rng) for _ in range(HTTP_CASES)]

    def post(body: bytes):
        r = httpx.post(url, content=body, timeout=30)
        if r.status_code != 200:
            return r.status_code, r.json()["error"]
        for line in r.text.splitlines():           # a stream may end with an error event
            if line.startswith("data: {") and '"error"' in line[:20]:
                return 200, json.loads(line[6:])["error"]
        return 200, None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(post, bodies))
    bad = [(status, err) for status, err in results
           if status not in (200, 400, 404, 413, 429, 500)
           or (status == 500 or (status == 200 and err)) and
           err["code"] != "model_output_not_harmony"]
    assert not bad, bad[:5]
    assert {200, 400} <= {status for status, _ in results}
    assert wait_until(lambda: server.server.model.scheduler.slots.used == 0)
