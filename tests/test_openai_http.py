"""The OpenAI-compatible HTTP endpoint of a real `gptoss-edge serve --http` process, driven by
the official `openai` client on the embedded default model (trained on harmony, so it reasons,
calls `lookup_signature` and answers): the canonical tools call, a real tool round trip, streaming,
seeds, limits and errors; and the same request over gRPC gives the same reply (one API, one
scheduler under both)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

openai = pytest.importorskip("openai")

from gptoss_edge.models import default_model_dir  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from demo import lookup_signature  # noqa: E402  (the demo's tool, run for real)
from gptoss_edge.v1 import llm_pb2 as pb  # noqa: E402
from gptoss_edge.v1 import llm_pb2_grpc  # noqa: E402

TOOL = json.loads((default_model_dir() / "tools" / "lookup_signature.json").read_text())
TOOLS = [{"type": "function", "function": TOOL}]
SYSTEM = {"role": "system", "content": "You answer questions about the Python standard library."}
ASK_TOOL = {"role": "user", "content": "What is the signature of os.path.join?"}
ASK = {"role": "user", "content": "What does json.dumps do?"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """-> (base_url, grpc address, process)."""
    tmp = tmp_path_factory.mktemp("openai")
    env = dict(os.environ, GPTOSS_EDGE_CACHE=str(tmp / "cache"))
    sock = tmp / "s.sock"
    proc = subprocess.Popen([sys.executable, "-m", "gptoss_edge.cli", "serve", "--listen",
                             f"unix:{sock}", "--http", "127.0.0.1:0", "--max-slots", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = proc.stdout.readline()
        url = re.search(r"OpenAI HTTP (http://\S+/v1)", banner)
        assert url, banner + proc.stderr.read()
        yield url.group(1), f"unix:{sock}", proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0], api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model_id(client):
    models = client.models.list().data
    assert len(models) == 1 and models[0].owned_by == "gptoss-edge"
    return models[0].id


def test_canonical_tools_call_and_a_real_round_trip(client, model_id):
    first = client.chat.completions.create(model=model_id, messages=[SYSTEM, ASK_TOOL],
                                           tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "lookup_signature"
    assert call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert isinstance(args.get("name"), str) and args["name"]
    assert choice.message.reasoning_content            # the analysis channel, kept apart
    assert first.usage.completion_tokens_details.reasoning_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    result = lookup_signature(args["name"])
    messages = [SYSTEM, ASK_TOOL, choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
    stream = client.chat.completions.create(model=model_id, messages=messages, tools=TOOLS,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == ["stop"] and content.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[0].choices[0].delta.role == "assistant"


def test_streamed_reply_equals_the_whole_reply(client, model_id):
    whole = client.chat.completions.create(model=model_id, messages=[ASK]).choices[0]
    chunks = list(client.chat.completions.create(model=model_id, messages=[ASK], stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning == whole.message.reasoning_content
    assert content == whole.message.content and content
    kinds = ["r" if getattr(d, "reasoning_content", None) else "c" for d in deltas if
             getattr(d, "reasoning_content", None) or d.content]
    assert "".join(kinds) == "r" * kinds.count("r") + "c" * kinds.count("c")   # reasoning first


def test_the_same_request_over_grpc_gives_the_same_reply(served, client, model_id):
    http = client.chat.completions.create(model=model_id, messages=[SYSTEM, ASK_TOOL],
                                          tools=TOOLS, reasoning_effort="low")
    request = pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_SYSTEM, content=SYSTEM["content"]),
                  pb.Message(role=pb.ROLE_USER, content=ASK_TOOL["content"])],
        tools=[pb.Tool(name=TOOL["name"], description=TOOL["description"],
                       parameters_json=json.dumps(TOOL["parameters"]))],
        reasoning_effort=pb.REASONING_EFFORT_LOW)
    with grpc.insecure_channel(served[1]) as ch:
        responses = list(llm_pb2_grpc.LLMStub(ch).Chat(request))
    reasoning = "".join(r.reasoning for r in responses)
    content = "".join(r.content + r.commentary for r in responses)
    arguments = "".join(r.tool_call.arguments for r in responses if r.HasField("tool_call"))
    message = http.choices[0].message
    assert reasoning == (message.reasoning_content or "")
    assert content == (message.content or "")
    assert arguments == "".join(c.function.arguments for c in message.tool_calls or [])
    assert responses[-1].finish.usage.completion_tokens == http.usage.completion_tokens


def test_limits_stop_and_seed(client, model_id):
    short = client.chat.completions.create(model=model_id, messages=[ASK], max_tokens=5)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    newer = client.chat.completions.create(model=model_id, messages=[ASK],
                                           max_completion_tokens=7)
    assert newer.usage.completion_tokens == 7
    whole = client.chat.completions.create(model=model_id, messages=[ASK]).choices[0]
    word = whole.message.content.split()[1]
    cut = client.chat.completions.create(model=model_id, messages=[ASK], stop=[word]).choices[0]
    assert cut.message.content == whole.message.content[:whole.message.content.index(word)]
    assert cut.finish_reason == "stop"
    seeded = [client.chat.completions.create(model=model_id, messages=[ASK], temperature=0.7,
                                             top_p=0.9, seed=5).choices[0].message
              for _ in range(2)]
    assert seeded[0].content == seeded[1].content
    assert seeded[0].reasoning_content == seeded[1].reasoning_content


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(model="gpt-5"), "NotFoundError", "'gpt-5'"),
    (dict(temperature=-1), "BadRequestError", "temperature"),
    (dict(top_p=0), "BadRequestError", "top_p"),
    (dict(reasoning_effort="extreme"), "BadRequestError", "reasoning_effort"),
    (dict(n=2), "BadRequestError", "n:"),
    (dict(messages=[]), "BadRequestError", "messages"),
    (dict(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}]),
     "BadRequestError", "tool_call_id"),
    (dict(tools=[{"type": "function", "function": {"name": "f",
                                                   "parameters": {"type": "string"}}}]),
     "BadRequestError", "tools[0]"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
     "BadRequestError", "text"),
    (dict(max_tokens=0), "BadRequestError", "max_tokens"),
])
def test_errors_are_openai_errors_with_the_matching_status(client, model_id, kwargs, error,
                                                           fragment):
    request = dict(model=model_id, messages=[ASK]) | kwargs
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**request)
    assert type(err.value).__name__ == error, err.value
    body = err.value.body
    assert fragment in body["message"], body
    assert body["type"] in ("invalid_request_error",)


def test_unknown_route_and_bad_json_are_openai_errors(served):
    import httpx2 as httpx
    base = served[0]
    r = httpx.get(f"{base}/completions-nope")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.post(f"{base}/chat/completions", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    deep = b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = httpx.post(f"{base}/chat/completions", content=deep)
    assert r.status_code == 400 and "deep" in r.json()["error"]["message"]


@pytest.mark.parametrize("http", ["nonsense", "127.0.0.1:99999", "256.1.1.1:80"])
def test_a_bad_http_address_is_one_line(tiny_engine, tmp_path, http):
    out = subprocess.run([sys.executable, "-m", "gptoss_edge.cli", "serve", str(tiny_engine),
                          "--listen", f"unix:{tmp_path}/s.sock", "--http", http,
                          "--max-context", "256", "--max-step-tokens", "32"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --http {http}: "), out.stderr
    assert not (tmp_path / "s.sock").exists()          # the gRPC side was taken down too
