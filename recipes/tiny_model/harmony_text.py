"""Harmony rendering as text, for the tiny model's training data and its quality checks.

Produces exactly the text that `openai_harmony` renders (and decodes) for the same conversation:
system header, developer message with a `functions` namespace, tool calls
(`<|start|>assistant to=functions.NAME<|channel|>commentary <|constrain|>json<|message|>{...}<|call|>`),
tool results (`<|start|>functions.NAME to=assistant<|channel|>commentary<|message|>...<|end|>`)
and final answers ending in `<|return|>`. tests/test_tiny_model_data.py checks the equality against
`openai_harmony` on o200k. Pure standard library.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL, ENDOFTEXT = "<|constrain|>", "<|return|>", "<|call|>", "<|endoftext|>"
SPECIAL_TOKENS = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL, ENDOFTEXT)

TOOL_NAME = "lookup_signature"
TOOL_RECIPIENT = f"functions.{TOOL_NAME}"
TOOL_DESCRIPTION = "Look up the call signature of a Python standard library function or class."
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string",
                            "description": "Dotted name, for example json.dumps"}},
    "required": ["name"],
}


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


LOOKUP_SIGNATURE = Tool(TOOL_NAME, TOOL_DESCRIPTION, TOOL_PARAMETERS)


def system_message(date: str, reasoning: str, with_tools: bool) -> str:
    """The system message as openai_harmony renders SystemContent.new() with a date and effort."""
    body = ("You are ChatGPT, a large language model trained by OpenAI.\n"
            "Knowledge cutoff: 2024-06\n"
            f"Current date: {date}\n\n"
            f"Reasoning: {reasoning}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message.")
    if with_tools:
        body += "\nCalls to these tools must go to the commentary channel: 'functions'."
    return f"{START}system{MESSAGE}{body}{END}"


def developer_message(instructions: str | None, tools: list[Tool]) -> str:
    parts = []
    if instructions:
        parts.append(f"# Instructions\n\n{instructions}")
    if tools:
        parts.append("# Tools\n\n## functions\n\nnamespace functions {\n\n"
                     + "".join(_tool_typescript(t) for t in tools) + "} // namespace functions")
    return f"{START}developer{MESSAGE}" + "\n\n".join(parts) + END


def _tool_typescript(tool: Tool) -> str:
    """TypeScript-like declaration harmony writes for a function tool with flat object params."""
    props = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    lines = [f"// {tool.description}", f"type {tool.name} = (_: {{"]
    for name, spec in props.items():
        if spec.get("description"):
            lines.append(f"// {spec['description']}")
        opt = "" if name in required else "?"
        lines.append(f"{name}{opt}: {spec['type']},")
    lines.append("}) => any;")
    return "\n".join(lines) + "\n\n"


def user_message(text: str) -> str:
    return f"{START}user{MESSAGE}{text}{END}"


def assistant_message(channel: str, text: str, terminal: str = END) -> str:
    return f"{START}assistant{CHANNEL}{channel}{MESSAGE}{text}{terminal}"


def tool_call(arguments: dict[str, Any], recipient: str = TOOL_RECIPIENT) -> str:
    args = json.dumps(arguments)
    return (f"{START}assistant to={recipient}{CHANNEL}commentary {CONSTRAIN}json{MESSAGE}"
            f"{args}{CALL}")


def tool_result(result: dict[str, Any], author: str = TOOL_RECIPIENT) -> str:
    return f"{START}{author} to=assistant{CHANNEL}commentary{MESSAGE}{json.dumps(result)}{END}"


ASSISTANT_PROMPT = f"{START}assistant"


# ---- parsing generated assistant text -----------------------------------------------------

_HEADER = re.compile(r"^assistant(?: to=(?P<to>[\w.]+))?<\|channel\|>(?P<channel>analysis|commentary|final)"
                     r"(?: (?P<ctype><\|constrain\|>json))?$")


@dataclasses.dataclass(frozen=True)
class ParsedMessage:
    channel: str
    recipient: str | None
    content: str
    terminal: str


class HarmonyFormatError(ValueError):
    """Generated text that is not well-formed harmony; the message says where."""


def parse_assistant_completion(text: str) -> list[ParsedMessage]:
    """Split a completion that continues a prompt ending in `<|start|>assistant` into messages.

    The completion must consist of whole messages (header, <|message|>, content, terminator)
    and end with <|return|> (after a final message) or <|call|> (after a tool call).
    """
    text = ASSISTANT_PROMPT + text
    messages: list[ParsedMessage] = []
    pos = 0
    while pos < len(text):
        if not text.startswith(START, pos):
            raise HarmonyFormatError(f"expected <|start|> at char {pos}: {text[pos:pos + 30]!r}")
        head_end = text.find(MESSAGE, pos)
        if head_end < 0:
            raise HarmonyFormatError(f"message header at char {pos} has no <|message|>")
        header = text[pos + len(START):head_end]
        m = _HEADER.match(header)
        if not m:
            raise HarmonyFormatError(f"malformed assistant header {header!r}")
        body_start = head_end + len(MESSAGE)
        ends = [(text.find(t, body_start), t) for t in (END, RETURN, CALL)]
        ends = [(i, t) for i, t in ends if i >= 0]
        if not ends:
            raise HarmonyFormatError(f"message at char {pos} is not terminated")
        stop, term = min(ends)
        content = text[body_start:stop]
        if any(s in content for s in SPECIAL_TOKENS):
            raise HarmonyFormatError(f"special token inside message content {content[:40]!r}")
        messages.append(ParsedMessage(m["channel"], m["to"], content, term))
        pos = stop + len(term)
        if term in (RETURN, CALL):
            if pos != len(text):
                raise HarmonyFormatError("text after the stop token")
            break
    if not messages or messages[-1].terminal not in (RETURN, CALL):
        raise HarmonyFormatError("completion does not end with <|return|> or <|call|>")
    last = messages[-1]
    if last.terminal == RETURN and last.channel != "final":
        raise HarmonyFormatError(f"<|return|> after a {last.channel!r} message")
    if last.terminal == CALL and (last.channel != "commentary" or not last.recipient):
        raise HarmonyFormatError("<|call|> on a message without a commentary recipient")
    return messages
