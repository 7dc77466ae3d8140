"""One chat turn between the wire and harmony: the request's messages rendered to prompt ids,
and the model's token stream parsed back into tagged ChatResponse deltas (reasoning, final
content with stop strings applied, structured tool calls) plus the finish reason."""
from __future__ import annotations

from gptoss_edge.runtime.chat import harmony
from gptoss_edge.runtime.frontends.served_model import invalid, parse_tool_schema
from gptoss_edge.runtime.engine.sampler import StopStringMatcher
from gptoss_edge.v1 import llm_pb2 as pb

ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_DEVELOPER: "developer", pb.ROLE_USER: "user",
         pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool"}
EFFORT = {pb.REASONING_EFFORT_UNSPECIFIED: "medium", pb.REASONING_EFFORT_LOW: "low",
          pb.REASONING_EFFORT_MEDIUM: "medium", pb.REASONING_EFFORT_HIGH: "high"}


class MalformedOutput(RuntimeError):
    """The model's tokens are not valid harmony; ends that stream (INTERNAL) with this text."""


def request_messages(request: pb.ChatRequest) -> list[harmony.Message]:
    """Wire messages -> harmony messages. An assistant message expands to its analysis
    (reasoning), its tool calls (commentary to=functions.NAME) and its final content."""
    if not request.messages:
        raise invalid("messages: at least one message is required")
    out: list[harmony.Message] = []
    for i, msg in enumerate(request.messages):
        role = ROLES.get(msg.role)
        if role is None:
            raise invalid(f"messages[{i}].role: set a harmony role (system, developer, user, "
                          f"assistant, tool), got {pb.Role.Name(msg.role)}")
        if role != "assistant" and (msg.tool_calls or msg.reasoning):
            raise invalid(f"messages[{i}]: only assistant messages carry reasoning/tool_calls")
        if not (msg.content or msg.tool_calls or msg.reasoning):
            raise invalid(f"messages[{i}].content: empty message")
        if role != "assistant":
            out.append(harmony.Message(role, msg.content, name=msg.name or None))
            continue
        if msg.reasoning:
            out.append(harmony.Message("assistant", msg.reasoning, channel="analysis"))
        for call in msg.tool_calls:
            out.append(harmony.Message("assistant", call.arguments, recipient=call.name))
        if msg.content:
            out.append(harmony.Message("assistant", msg.content))
    return out


def request_tools(request: pb.ChatRequest) -> list[harmony.Tool]:
    return [harmony.Tool(t.name, t.description, parse_tool_schema(i, t.name, t.parameters_json))
            for i, t in enumerate(request.tools)]


def render_request(request: pb.ChatRequest, tokenizer) -> list[int]:
    """Validated prompt ids, ending with `<|start|>assistant`."""
    messages, tools = request_messages(request), request_tools(request)
    try:
        return list(harmony.render_chat(messages, tools, EFFORT[request.reasoning_effort],
                                        tokenizer))
    except ValueError as e:   # names the message or tool (HarmonyError is a ValueError too)
        raise invalid(str(e)) from None


class ChatTurn:
    def __init__(self, tokenizer, stops: list[str]):
        self.parser = harmony.HarmonyStreamParser(tokenizer)
        self.stop_token_ids = frozenset(harmony.stop_token_ids(tokenizer))
        self.content_stops = StopStringMatcher(stops)
        self.tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason: str | None = None
        self._call_index = -1
        self._call_name: str | None = None
        self._in_call = False

    def feed(self, token_id: int) -> list[pb.ChatResponse]:
        """One generated token -> the deltas it completes (often none, sometimes several)."""
        self.tokens += 1
        try:
            events = self.parser.feed(token_id)
        except harmony.HarmonyError as e:
            raise MalformedOutput(f"model output is not valid harmony at completion token "
                                  f"{self.tokens} (id {token_id}): {e}") from None
        current = self.parser.current
        self.reasoning_tokens += current is not None and current.channel == "analysis"
        out: list[pb.ChatResponse] = []
        for ev in events:
            if isinstance(ev, harmony.ReasoningDelta):
                self._in_call = False
                out.append(pb.ChatResponse(reasoning=ev.text))
            elif isinstance(ev, harmony.CommentaryDelta):
                self._in_call = False
                out.append(pb.ChatResponse(commentary=ev.text))
            elif isinstance(ev, harmony.FinalDelta):
                self._in_call = False
                match = self.content_stops.feed(ev.text)
                if match.text:
                    out.append(pb.ChatResponse(content=match.text))
                if match.stop is not None:
                    self.finish_reason = "stop"
                    break
            elif isinstance(ev, harmony.ToolCallDelta):
                out.append(pb.ChatResponse(tool_call=self._tool_delta(ev)))
            elif isinstance(ev, harmony.Stop):
                self.finish_reason = ev.reason
        return out

    def _tool_delta(self, ev) -> pb.ToolCallDelta:
        new_call = not self._in_call or ev.name != self._call_name
        if new_call:
            self._call_index += 1
            self._call_name = ev.name
            self._in_call = True
        return pb.ToolCallDelta(index=self._call_index, name=ev.name if new_call else "",
                                arguments=ev.arguments_fragment or "")

    def close(self) -> list[pb.ChatResponse]:
        """End of the turn: content held back by the stop-string matcher is not a stop."""
        held = self.content_stops.flush()
        return [pb.ChatResponse(content=held)] if held else []
