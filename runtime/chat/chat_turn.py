"""One chat turn between the neutral request API and harmony: the request's messages rendered
to prompt ids, and the model's token stream parsed back into tagged deltas (reasoning, final
content with stop strings applied, structured tool calls) plus the finish reason."""
from __future__ import annotations

from gptoss_edge.runtime.api.errors import ApiError, ErrorKind, invalid
from gptoss_edge.runtime.api.events import ChatDelta, ToolCallDelta
from gptoss_edge.runtime.api.requests import REASONING_EFFORTS, ROLES, ChatParams
from gptoss_edge.runtime.chat import harmony
from gptoss_edge.runtime.engine.sampler import StopStringMatcher


def request_messages(params: ChatParams) -> list[harmony.Message]:
    """Request messages -> harmony messages. An assistant message expands to its analysis
    (reasoning), its tool calls (commentary to=functions.NAME) and its final content."""
    if not params.messages:
        raise invalid("messages: at least one message is required")
    out: list[harmony.Message] = []
    for i, msg in enumerate(params.messages):
        if msg.role not in ROLES:
            raise invalid(f"messages[{i}].role: set a harmony role ({', '.join(ROLES)}), "
                          f"got {msg.role!r}")
        if msg.role != "assistant" and (msg.tool_calls or msg.reasoning):
            raise invalid(f"messages[{i}]: only assistant messages carry reasoning/tool_calls")
        if not (msg.content or msg.tool_calls or msg.reasoning):
            raise invalid(f"messages[{i}].content: empty message")
        if msg.role != "assistant":
            out.append(harmony.Message(msg.role, msg.content, name=msg.name or None))
            continue
        if msg.reasoning:
            out.append(harmony.Message("assistant", msg.reasoning, channel="analysis"))
        for call in msg.tool_calls:
            out.append(harmony.Message("assistant", call.arguments, recipient=call.name))
        if msg.content:
            out.append(harmony.Message("assistant", msg.content))
    return out


def message_text(params: ChatParams) -> str:
    """All the text of the messages that rendering tokenizes as it is (content, reasoning, tool
    call arguments): the rendered prompt holds at least its tokens."""
    return "".join(m.content + m.reasoning + "".join(c.arguments for c in m.tool_calls)
                   for m in params.messages)


def render_request(params: ChatParams, tokenizer) -> list[int]:
    """Validated prompt ids, ending with `<|start|>assistant`."""
    if params.reasoning_effort not in REASONING_EFFORTS:
        raise invalid(f"reasoning_effort: one of {', '.join(REASONING_EFFORTS)}, "
                      f"got {params.reasoning_effort!r}")
    messages = request_messages(params)
    tools = [harmony.Tool(t.name, t.description, t.parameters) for t in params.tools]
    try:
        return list(harmony.render_chat(messages, tools, params.reasoning_effort, tokenizer))
    except ValueError as e:   # names the message or tool (HarmonyError is a ValueError too)
        raise invalid(str(e)) from None
    except RecursionError:
        raise invalid("tools: a parameters schema nests too deeply to render") from None


def malformed(opened_message: bool, tokens: int, token_id: int, error: Exception) -> ApiError:
    """The error ending a stream whose tokens are not harmony. When not even the first message
    header parsed, the model does not speak harmony at all (random weights): say so."""
    if not opened_message:
        return ApiError(ErrorKind.MODEL_OUTPUT,
                        "this engine's model does not produce harmony chat (random or untrained "
                        f"weights?): its first message header is malformed ({error}); Chat needs a "
                        "harmony-trained model, Generate works with any engine")
    return ApiError(ErrorKind.MODEL_OUTPUT, f"model output is not valid harmony at completion "
                                            f"token {tokens} (id {token_id}): {error}")


class ChatTurn:
    def __init__(self, tokenizer, stops: tuple[str, ...] | list[str]):
        self.parser = harmony.HarmonyStreamParser(tokenizer)
        self.stop_token_ids = frozenset(harmony.stop_token_ids(tokenizer))
        self.content_stops = StopStringMatcher(list(stops))
        self.tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason: str | None = None
        self._call_index = -1
        self._call_name: str | None = None
        self._in_call = False
        self._opened = False              # a message header parsed: the model speaks harmony

    def feed(self, token_id: int) -> list[ChatDelta]:
        """One generated token -> the deltas it completes (often none, sometimes several).
        Raises ApiError(MODEL_OUTPUT) when the tokens are not harmony."""
        self.tokens += 1
        try:
            events = self.parser.feed(token_id)
        except harmony.HarmonyError as e:
            raise malformed(self._opened, self.tokens, token_id, e) from None
        current = self.parser.current
        self._opened = self._opened or current is not None or bool(self.parser.messages)
        self.reasoning_tokens += current is not None and current.channel == "analysis"
        out: list[ChatDelta] = []
        for ev in events:
            if isinstance(ev, harmony.ReasoningDelta):
                self._in_call = False
                out.append(ChatDelta("reasoning", ev.text))
            elif isinstance(ev, harmony.CommentaryDelta):
                self._in_call = False
                out.append(ChatDelta("commentary", ev.text))
            elif isinstance(ev, harmony.FinalDelta):
                self._in_call = False
                match = self.content_stops.feed(ev.text)
                if match.text:
                    out.append(ChatDelta("content", match.text))
                if match.stop is not None:
                    self.finish_reason = "stop"
                    break
            elif isinstance(ev, harmony.ToolCallDelta):
                out.append(ChatDelta("tool_call", tool_call=self._tool_delta(ev)))
            elif isinstance(ev, harmony.Stop):
                self.finish_reason = ev.reason
        return out

    def _tool_delta(self, ev) -> ToolCallDelta:
        new_call = not self._in_call or ev.name != self._call_name
        if new_call:
            self._call_index += 1
            self._call_name = ev.name
            self._in_call = True
        return ToolCallDelta(index=self._call_index, name=ev.name if new_call else "",
                             arguments=ev.arguments_fragment or "")

    def close(self) -> list[ChatDelta]:
        """End of the turn: content held back by the stop-string matcher is not a stop."""
        held = self.content_stops.flush()
        return [ChatDelta("content", held)] if held else []
