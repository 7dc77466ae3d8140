"""Harmony chat format of gpt-oss: rendering a conversation into prompt tokens (this module) and
parsing the model's streamed output (harmony_parser, re-exported here).

Rendering is text plus special tokens by name, so it works with any tokenizer naming the harmony
specials (o200k_harmony for the real models, the tiny BPE of the default model). On o200k it
equals openai-harmony 0.0.8's `render_conversation_for_completion(..., Role.ASSISTANT)` token for
token (tests/test_harmony_render.py). Each text piece is encoded separately, as harmony does:

    <|start|>system<|message|>{identity, cutoff, date, reasoning, channels}<|end|>
    <|start|>developer<|message|># Instructions\n\n{system+developer text}\n\n# Tools ...<|end|>
    <|start|>user<|message|>{text}<|end|>
    <|start|>assistant<|channel|>analysis<|message|>{text}<|end|>           (dropped, see below)
    <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{args}<|call|>
    <|start|>functions.f to=assistant<|channel|>commentary<|message|>{result}<|end|>
    <|start|>assistant<|channel|>final<|message|>{text}<|end|>
    <|start|>assistant                                                       (the model goes on)

Like harmony (auto_drop_analysis), when the last assistant message is on the final channel,
analysis messages before the first final message are left out.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence, Union

from gptoss_edge.runtime.chat.harmony_parser import (  # noqa: F401  (re-exported API)
    CHANNELS, CommentaryDelta, Event, FinalDelta, HarmonyError, HarmonyStreamParser,
    ParsedCompletion, ParsedMessage, ReasoningDelta, Stop, ToolCall, ToolCallDelta,
    parse_completed, stop_token_ids)
from gptoss_edge.runtime.chat.harmony_schema import Tool, tools_section, validate_tools  # noqa: F401
from gptoss_edge.runtime.tokens.tokenizer import Tokenizer

__all__ = [
    "Message", "Tool", "render_chat", "render_pieces", "encode_pieces", "validate_tools",
    "HarmonyStreamParser", "HarmonyError", "parse_completed", "stop_token_ids", "Event",
    "ReasoningDelta", "CommentaryDelta", "FinalDelta", "ToolCallDelta", "Stop",
    "ParsedCompletion", "ParsedMessage", "ToolCall", "CHANNELS", "REASONING_EFFORTS",
]

DEFAULT_MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_KNOWLEDGE_CUTOFF = "2024-06"
REASONING_EFFORTS = ("low", "medium", "high")
ROLES = ("system", "developer", "user", "assistant", "tool")
JSON_CONSTRAINT = "<|constrain|>json"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclasses.dataclass(frozen=True)
class Message:
    """One chat message. role: system | developer | user | assistant | tool.
    assistant: channel defaults to "final", or "commentary" when `recipient` is set (a tool call:
      recipient "functions.NAME" or just "NAME", content = JSON arguments, content_type defaults
      to "<|constrain|>json").
    tool: the result of function `name` ("NAME" or "functions.NAME"), content = result text.
    system / developer: must come first; their texts become the developer instructions.
    user: `name` (optional) is rendered as `user:NAME`."""
    role: str
    content: str
    channel: str | None = None
    recipient: str | None = None
    name: str | None = None
    content_type: str | None = None


@dataclasses.dataclass(frozen=True)
class _Special:
    name: str


_Piece = Union[str, _Special]   # text (encoded as plain text) or a special token by name


@dataclasses.dataclass(frozen=True)
class _Rendered:
    """A message as harmony sees it: header fields plus already formatted content."""
    author: str                  # "system", "user", "assistant", "functions.f", "user:bob"
    content: str
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    is_assistant: bool = False

    def pieces(self) -> list[_Piece]:
        out: list[_Piece] = [_Special("<|start|>"), *self._author_pieces()]
        if self.recipient is not None and self.recipient != "all":
            out.append(f" to={self.recipient}")
        if self.channel is not None:
            out += [_Special("<|channel|>"), self.channel]
        if self.content_type is not None:
            out += _content_type_pieces(self.content_type)
        out += [_Special("<|message|>"), self.content]
        tool_call = self.is_assistant and self.recipient is not None
        out.append(_Special("<|call|>" if tool_call else "<|end|>"))
        return out

    def _author_pieces(self) -> list[str]:
        # harmony encodes the role and ":name" as separate text pieces
        role, sep, name = self.author.partition(":")
        return [role, f":{name}"] if sep else [role]


def _content_type_pieces(content_type: str) -> list[_Piece]:
    marker = "<|constrain|>"
    if content_type.startswith(marker):
        rest = content_type[len(marker):]
        return [" ", _Special(marker)] + ([rest] if rest else [])
    return [f" {content_type}"]


def render_chat(messages: Sequence[Message], tools: Sequence[Tool] | None = None,
                reasoning_effort: str = "medium", tokenizer: Tokenizer | None = None, *,
                current_date: str | None = None, model_identity: str = DEFAULT_MODEL_IDENTITY,
                knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF) -> list[int]:
    """Prompt tokens for the next assistant turn, ending with `<|start|>assistant`.
    Raises ValueError naming the bad message, tool or argument."""
    if tokenizer is None:
        raise TypeError("render_chat needs a tokenizer")
    return encode_pieces(render_pieces(
        messages, tools, reasoning_effort, current_date=current_date,
        model_identity=model_identity, knowledge_cutoff=knowledge_cutoff), tokenizer)


def render_pieces(messages: Sequence[Message], tools: Sequence[Tool] | None = None,
                  reasoning_effort: str = "medium", *, current_date: str | None = None,
                  model_identity: str = DEFAULT_MODEL_IDENTITY,
                  knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF) -> list[_Piece]:
    """The prompt as text pieces and special tokens (tokenizer independent)."""
    tools = list(tools or [])
    validate_tools(tools)
    if reasoning_effort not in REASONING_EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, "
                         f"got {reasoning_effort!r}")
    instructions, turns = _split_instructions(messages)
    rendered = [_Rendered("system", system_text(reasoning_effort, bool(tools), model_identity,
                                                knowledge_cutoff, current_date))]
    developer = developer_text(instructions, tools)
    if developer is not None:
        rendered.append(_Rendered("developer", developer))
    rendered += [_to_rendered(m) for _, m in turns]
    pieces: list[_Piece] = []
    for message in _drop_analysis(rendered):
        pieces += message.pieces()
    return pieces + [_Special("<|start|>"), "assistant"]


def encode_pieces(pieces: Sequence[_Piece], tokenizer: Tokenizer) -> list[int]:
    ids: list[int] = []
    for piece in pieces:
        if isinstance(piece, _Special):
            ids.append(tokenizer.special_id(piece.name))
        elif piece:
            ids += tokenizer.encode(piece)
    return ids


def system_text(reasoning_effort: str, has_tools: bool, model_identity: str | None,
                knowledge_cutoff: str | None, current_date: str | None) -> str:
    top = [model_identity] if model_identity is not None else []
    if knowledge_cutoff is not None:
        top.append(f"Knowledge cutoff: {knowledge_cutoff}")
    if current_date is not None:
        top.append(f"Current date: {current_date}")
    sections = ["\n".join(top)] if top else []
    sections.append(f"Reasoning: {reasoning_effort}")
    channels = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
    if has_tools:
        channels += "\nCalls to these tools must go to the commentary channel: 'functions'."
    sections.append(channels)
    return "\n\n".join(sections)


def developer_text(instructions: str | None, tools: Sequence[Tool]) -> str | None:
    sections = ["# Instructions", instructions] if instructions is not None else []
    if tools:
        sections.append(tools_section(tools))
    return "\n\n".join(sections) if sections else None


def _split_instructions(messages: Sequence[Message]) -> tuple[str | None, list[tuple[int, Message]]]:
    """Leading system/developer messages -> instruction text; the rest -> (index, message)."""
    if not messages:
        raise ValueError("messages: the conversation is empty")
    texts: list[str] = []
    turns: list[tuple[int, Message]] = []
    for i, message in enumerate(messages):
        _check_message(message, i)
        if message.role in ("system", "developer"):
            if turns:
                raise ValueError(f"messages[{i}]: {message.role} messages must come before "
                                 "user/assistant/tool messages")
            texts.append(message.content)
        else:
            turns.append((i, message))
    return ("\n\n".join(texts) if texts else None), turns


def _check_message(message: Message, i: int) -> None:
    if not isinstance(message, Message):
        raise ValueError(f"messages[{i}]: expected a Message, got {type(message).__name__}")
    if message.role not in ROLES:
        raise ValueError(f"messages[{i}]: role must be one of {', '.join(ROLES)}, got {message.role!r}")
    if not isinstance(message.content, str):
        raise ValueError(f"messages[{i}]: content must be a string")
    if message.channel is not None and message.channel not in CHANNELS:
        raise ValueError(f"messages[{i}]: channel must be one of {', '.join(CHANNELS)}, "
                         f"got {message.channel!r}")
    for field in ("recipient", "name"):
        value = getattr(message, field)
        if value is not None and not (isinstance(value, str) and _NAME.fullmatch(value)):
            raise ValueError(f"messages[{i}]: {field} {value!r} must be a name of letters, "
                             "digits, '_', '-' and '.'")
    ctype = message.content_type
    if ctype is not None and not (isinstance(ctype, str) and ctype and not _has_space(ctype)):
        raise ValueError(f"messages[{i}]: content_type {ctype!r} must be non-empty without spaces")
    if message.name is not None and message.role not in ("user", "tool"):
        raise ValueError(f"messages[{i}]: `name` is only for user and tool messages")
    if message.role == "tool" and message.name is None:
        raise ValueError(f"messages[{i}]: a tool message needs `name` (the function it answers)")
    if message.recipient is not None and message.role != "assistant":
        raise ValueError(f"messages[{i}]: only assistant messages may have a recipient")


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def _function(name: str) -> str:
    return name if name.startswith("functions.") else f"functions.{name}"


def _to_rendered(message: Message) -> _Rendered:
    if message.role == "user":
        author = f"user:{message.name}" if message.name else "user"
        return _Rendered(author, message.content, message.channel)
    if message.role == "tool":
        return _Rendered(_function(message.name), message.content, message.channel or "commentary",
                         recipient="assistant", content_type=message.content_type)
    if message.recipient is not None:   # assistant tool call
        return _Rendered("assistant", message.content, message.channel or "commentary",
                         _function(message.recipient), message.content_type or JSON_CONSTRAINT,
                         is_assistant=True)
    return _Rendered("assistant", message.content, message.channel or "final",
                     content_type=message.content_type, is_assistant=True)


def _drop_analysis(messages: list[_Rendered]) -> list[_Rendered]:
    """harmony's auto_drop_analysis: if the last assistant message is final, drop analysis
    messages before the first final message (earlier turns' reasoning)."""
    last_assistant = next((m for m in reversed(messages) if m.is_assistant), None)
    if last_assistant is None or last_assistant.channel != "final":
        return messages
    first_final = next((i for i, m in enumerate(messages) if m.channel == "final"), None)
    if first_final is None:
        return messages
    return [m for i, m in enumerate(messages) if not (i < first_final and m.channel == "analysis")]
