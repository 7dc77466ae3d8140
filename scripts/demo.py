"""The main job, end to end on the embedded default model (README: `make demo`).

1. `gptoss-edge serve` with no engine dir compiles the embedded default model (cached after the
   first run) and serves it over gRPC on a Unix socket.
2. A chat: the reply streams reasoning (analysis channel) and then the final answer.
3. A tool round trip: the model calls `functions.lookup_signature` with JSON arguments, this
   script runs the tool for real (inspect.signature on the named stdlib object), sends the result
   back as a tool message and streams the model's final answer.
4. An out-of-domain question: the model says what it can answer instead of inventing an API.
5. SIGTERM: the server drains and exits 0.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gptoss_edge.models import default_model_dir
from gptoss_edge.runtime.clients.dial import llm_stub, open_channel, private_socket
from gptoss_edge.v1 import llm_pb2 as pb

QUESTION = "What does json.dumps do?"
TOOL_QUESTION = "What is the signature of os.path.join?"
OUT_OF_DOMAIN_QUESTION = "What is 2+2?"


def lookup_signature(name: str) -> dict:
    """The tool, for real: resolve a dotted stdlib name and return its call signature. Results
    have the shapes the model was trained on (recipes/tiny_model/data.py lookup_signature):
    {"name", "signature"}, {"error": "unknown name X"}, {"name", "error": "signature not available"}."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return {"error": f"unknown name {name}"}
        try:
            return {"name": name, "signature": f"{name}{inspect.signature(obj)}"}
        except (TypeError, ValueError):
            return {"name": name, "error": "signature not available"}
    return {"error": f"unknown name {name}"}


async def wait_serving(address: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode} before serving")
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit(f"server not SERVING after {timeout_s:.0f}s")


async def stream_reply(stub, request: pb.ChatRequest) -> list[pb.ToolCall]:
    """Print one streamed reply; return the tool calls it made."""
    calls: dict[int, pb.ToolCall] = {}
    section = None
    async for r in stub.Chat(request):
        kind = r.WhichOneof("delta")
        if kind in ("reasoning", "content", "commentary") and kind != section:
            section = kind
            print(f"\n  [{ {'reasoning': 'analysis', 'content': 'final', 'commentary': 'commentary'}[kind] }] ",
                  end="")
        if kind == "reasoning":
            print(r.reasoning, end="", flush=True)
        elif kind == "content":
            print(r.content, end="", flush=True)
        elif kind == "commentary":
            print(r.commentary, end="", flush=True)
        elif kind == "tool_call":
            call = calls.setdefault(r.tool_call.index, pb.ToolCall())
            call.name = call.name or r.tool_call.name
            call.arguments += r.tool_call.arguments
        elif kind == "finish":
            for call in calls.values():
                print(f"\n  [tool call] functions.{call.name}({call.arguments})", end="")
            u = r.finish.usage
            print(f"\n  -- finish: {pb.FinishReason.Name(r.finish.reason)}; usage: prompt "
                  f"{u.prompt_tokens}, completion {u.completion_tokens}, reasoning {u.reasoning_tokens}")
    return list(calls.values())


async def ask(stub, question: str) -> None:
    print(f"\nuser: {question}", end="")
    await stream_reply(stub, pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=question)],
                                            sampling=pb.SamplingParams(temperature=0)))


async def tool_round_trip(stub, tool: dict) -> None:
    """The question with the tool offered; run each call for real and stream the final answer."""
    tools = [pb.Tool(name=tool["name"], description=tool["description"],
                     parameters_json=json.dumps(tool["parameters"]))]
    messages = [pb.Message(role=pb.ROLE_USER, content=TOOL_QUESTION)]
    print(f"\nuser (tool {tool['name']} offered): {TOOL_QUESTION}", end="")
    calls = await stream_reply(stub, pb.ChatRequest(messages=messages, tools=tools,
                                                    sampling=pb.SamplingParams(temperature=0)))
    if not calls:
        print("  (the model answered without calling the tool)")
        return
    messages.append(pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=calls))
    for call in calls:
        try:
            args = json.loads(call.arguments)
            result = lookup_signature(str(args.get("name", "")))
        except (json.JSONDecodeError, AttributeError) as e:
            result = {"error": f"arguments are not a JSON object: {e}"}
        print(f"  [tool result] {json.dumps(result)}")
        messages.append(pb.Message(role=pb.ROLE_TOOL, name=call.name, content=json.dumps(result)))
    await stream_reply(stub, pb.ChatRequest(messages=messages, tools=tools,
                                            sampling=pb.SamplingParams(temperature=0)))


async def conversation(address: str) -> None:
    tool = json.loads((default_model_dir() / "tools" / "lookup_signature.json").read_text())
    async with open_channel(address) as ch:
        stub = llm_stub(ch)
        info = await stub.ModelInfo(pb.ModelInfoRequest())
        print(f"model: {info.name} (target {info.target})")
        await ask(stub, QUESTION)                       # a direct answer
        await tool_round_trip(stub, tool)               # a tool call, its result, the answer
        await ask(stub, OUT_OF_DOMAIN_QUESTION)         # what the model can do instead


def main() -> int:
    with private_socket("gptoss-edge-demo-") as address:
        return run_demo(address)


def run_demo(address: str) -> int:
    print(f"starting: gptoss-edge serve --listen {address}  (compiles the default model once)")
    server = subprocess.Popen([sys.executable, "-m", "gptoss_edge.cli", "serve", "--listen", address],
                              stdout=sys.stdout, stderr=sys.stderr)
    try:
        asyncio.run(wait_serving(address, server, timeout_s=float(os.environ.get("DEMO_START_TIMEOUT", 900))))
        asyncio.run(conversation(address))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
            print(f"server drained and exited with {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
