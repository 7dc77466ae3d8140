"""`gptoss-edge chat`: one chat turn streamed to the terminal. Reasoning goes to stderr (dimmed
on a terminal) so the answer on stdout stays clean; tool calls are printed as one JSON object
per call: {"tool_call": {"name": ..., "arguments": ...}}."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc

from gptoss_edge.v1 import llm_pb2 as pb

DIM, RESET = "\x1b[2m", "\x1b[0m"
EFFORT = {"low": pb.REASONING_EFFORT_LOW, "medium": pb.REASONING_EFFORT_MEDIUM,
          "high": pb.REASONING_EFFORT_HIGH}


def load_tools(paths: list[Path]) -> list[pb.Tool]:
    """Each file: one tool object {name, description, parameters} or a list of them."""
    tools = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--tool {path}: {e}") from None
        for i, t in enumerate(data if isinstance(data, list) else [data]):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise ValueError(f"--tool {path}: entry {i} needs a string 'name'")
            tools.append(pb.Tool(name=t["name"], description=t.get("description", ""),
                                 parameters_json=json.dumps(t.get("parameters", {}))))
    return tools


def build_request(args) -> pb.ChatRequest:
    messages = []
    if args.system:
        messages.append(pb.Message(role=pb.ROLE_DEVELOPER, content=args.system))
    messages.append(pb.Message(role=pb.ROLE_USER, content=args.message))
    sampling = pb.SamplingParams()
    if args.temperature is not None:
        sampling.temperature = args.temperature
    if args.seed is not None:
        sampling.seed = args.seed
    return pb.ChatRequest(messages=messages, tools=load_tools(args.tool),
                          reasoning_effort=EFFORT[args.reasoning], sampling=sampling,
                          max_tokens=args.max_tokens)


class TerminalPrinter:
    def __init__(self, out=sys.stdout, err=sys.stderr):
        self.out, self.err = out, err
        self.dim = err.isatty()
        self._calls: dict[int, dict] = {}
        self._reasoning_open = False
        self._wrote_content = False

    def show(self, resp: pb.ChatResponse) -> None:
        kind = resp.WhichOneof("delta")
        if kind in ("reasoning", "commentary"):
            if not self._reasoning_open:
                self.err.write((DIM if self.dim else "") + f"[{kind}] ")
                self._reasoning_open = True
            self.err.write(getattr(resp, kind))
            self.err.flush()
            return
        self._close_reasoning()
        if kind == "content":
            self.out.write(resp.content)
            self.out.flush()
            self._wrote_content = True
        elif kind == "tool_call":
            call = self._calls.setdefault(resp.tool_call.index, {"name": "", "arguments": ""})
            call["name"] = call["name"] or resp.tool_call.name
            call["arguments"] += resp.tool_call.arguments
        elif kind == "finish":
            self._print_calls()
            u = resp.finish.usage
            self.err.write(f"\n[{pb.FinishReason.Name(resp.finish.reason)[14:].lower()}: "
                           f"{u.prompt_tokens} prompt, {u.completion_tokens} completion "
                           f"({u.reasoning_tokens} reasoning) tokens]\n")

    def _close_reasoning(self) -> None:
        if self._reasoning_open:
            self.err.write((RESET if self.dim else "") + "\n")
            self._reasoning_open = False

    def _print_calls(self) -> None:
        if self._calls and self._wrote_content:
            self.out.write("\n")
        for i in sorted(self._calls):
            call = self._calls[i]
            try:
                arguments = json.loads(call["arguments"])
            except json.JSONDecodeError:
                arguments = call["arguments"]    # shown as the model wrote it
            self.out.write(json.dumps({"tool_call": {"name": call["name"],
                                                     "arguments": arguments}}) + "\n")
        self.out.flush()


async def chat_main(args) -> int:
    from gptoss_edge.runtime.clients.dial import llm_stub, open_channel
    from gptoss_edge.runtime.frontends.grpc_server import default_socket_path
    from gptoss_edge.runtime.frontends.listen import socket_is_live

    try:
        request = build_request(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("GPTOSS_EDGE_TOKEN")
    address = args.server or f"unix:{default_socket_path()}"
    local = None
    try:
        if not args.server and not socket_is_live(default_socket_path()):   # none, or stale
            local, address = await _start_local_server()
    except (ValueError, OSError, RuntimeError) as e:   # no default model, bad engine dir
        print(f"error: no server at {address} and cannot start one: {e}", file=sys.stderr)
        return 2
    try:
        async with open_channel(address, tls_ca=args.tls_ca, token=token) as channel:
            printer = TerminalPrinter()
            async for resp in llm_stub(channel).Chat(request):
                printer.show(resp)
        return 0
    except grpc.aio.AioRpcError as e:
        print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        if local is not None:
            await local.stop()
            local.model.backend.close()
            shutil.rmtree(Path(local.address.removeprefix("unix:")).parent, ignore_errors=True)


async def _start_local_server():
    """No server named and none running: serve the default model in-process for this turn."""
    from gptoss_edge.runtime.engine.opener import EngineLimits, open_engine
    from gptoss_edge.runtime.frontends.grpc_server import Server, ServeOptions

    engine = open_engine(None, EngineLimits(max_slots=1))
    sock = Path(tempfile.mkdtemp(prefix="gptoss-edge-chat-")) / "s.sock"
    server = await Server.start(engine.backend, engine.tokenizer,
                                ServeOptions(listen=f"unix:{sock}", model_name=engine.name))
    return server, server.address
