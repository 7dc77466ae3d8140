"""Streaming parser for what a gpt-oss model writes after a prompt ending in `<|start|>assistant`.

Grammar of one assistant turn (special tokens by name, any tokenizer that names them):

    message := HEADER <|message|> TEXT (<|end|> | <|return|> | <|call|>)
    turn    := message (<|start|> message)*           the first message's role was in the prompt
    HEADER  := ["assistant"] <|channel|>CHANNEL [" to=functions.NAME"] [" " CONTENT_TYPE]
    CONTENT_TYPE := "<|constrain|>json" | "json" | ...

A turn ends on <|return|> (reason "stop") or <|call|> (reason "tool_calls"), never on <|end|>:
after <|end|> the model goes on with `<|start|>assistant...`. Text is streamed as it arrives,
through an IncrementalDecoder, so a delta never splits a character. Anything else is malformed
and raises HarmonyError naming what was seen where; the parser is then unusable (the caller ends
that stream with the error).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Union

from gptoss_edge.runtime.tokens.tokenizer import IncrementalDecoder, Tokenizer, TokenizerError

CHANNELS = ("analysis", "commentary", "final")
MAX_HEADER_TOKENS = 128   # real headers take ~10-40 tokens, even on the 512-id tiny BPE


class HarmonyError(RuntimeError):
    """The model's output is not well-formed harmony; the message says what and where. Not a
    ValueError on purpose: bad client input raises ValueError (INVALID_ARGUMENT), bad model
    output is the server's problem (end that stream with an error)."""


@dataclasses.dataclass(frozen=True)
class ReasoningDelta:       # analysis channel (chain of thought, never the answer)
    text: str


@dataclasses.dataclass(frozen=True)
class CommentaryDelta:      # commentary channel without recipient (a preamble to the user)
    text: str


@dataclasses.dataclass(frozen=True)
class FinalDelta:           # final channel (the answer)
    text: str


@dataclasses.dataclass(frozen=True)
class ToolCallDelta:        # message to=functions.NAME; the first delta of a call has fragment ""
    name: str
    arguments_fragment: str


@dataclasses.dataclass(frozen=True)
class Stop:                 # "stop" on <|return|>, "tool_calls" on <|call|>
    reason: str


Event = Union[ReasoningDelta, CommentaryDelta, FinalDelta, ToolCallDelta, Stop]


@dataclasses.dataclass
class ParsedMessage:
    channel: str
    recipient: str | None       # e.g. "functions.lookup_signature"
    content_type: str | None    # e.g. "<|constrain|>json"
    text: str = ""

    @property
    def tool_name(self) -> str | None:
        return self.recipient[len("functions."):] if self.recipient else None


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str              # the JSON text exactly as the model wrote it


@dataclasses.dataclass(frozen=True)
class ParsedCompletion:
    reasoning: str
    commentary: str
    final: str
    tool_calls: list[ToolCall]
    stop_reason: str | None     # None: the tokens ended without <|return|> / <|call|>
    messages: list[ParsedMessage]


def stop_token_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Tokens that end an assistant turn: <|return|> and <|call|> (not <|end|>)."""
    return frozenset({tokenizer.special_id("<|return|>"), tokenizer.special_id("<|call|>")})


class HarmonyStreamParser:
    """feed(token_id) -> events. By default the prompt already holds `<|start|>assistant`, so
    the first tokens are that message's header (`after_start_role=False`: expect <|start|>)."""

    def __init__(self, tokenizer: Tokenizer, *, after_start_role: bool = True,
                 max_header_tokens: int = MAX_HEADER_TOKENS):
        self._tok = tokenizer
        self._id = {name: tokenizer.special_id(name) for name in
                    ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>",
                     "<|return|>", "<|call|>")}
        self._header_specials = {self._id["<|channel|>"], self._id["<|constrain|>"]}
        self._ends = {self._id["<|end|>"]: None, self._id["<|return|>"]: "stop",
                      self._id["<|call|>"]: "tool_calls"}   # message end token -> stop reason
        self._max_header = max_header_tokens
        self._state = "header" if after_start_role else "start"
        self._role_given = after_start_role
        self._header: list[int] = []
        self._decoder: IncrementalDecoder | None = None
        self._current: ParsedMessage | None = None
        self.messages: list[ParsedMessage] = []
        self.stop_reason: str | None = None
        self.tokens_seen = 0

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def current(self) -> ParsedMessage | None:
        """The message whose content is streaming now: after feed(t), the message t opened
        (<|message|>) or continued; None in a header, between messages and after the end token.
        Reasoning tokens = tokens after whose feed current.channel == "analysis"."""
        return self._current if self._state == "content" else None

    def feed(self, token_id: int) -> list[Event]:
        if self._state == "failed":
            raise HarmonyError("parser already failed on malformed output")
        try:
            return self._feed(token_id)
        except (HarmonyError, TokenizerError) as exc:
            self._state = "failed"
            raise HarmonyError(f"{exc} (at output token {self.tokens_seen})") from None

    def finish(self) -> list[Event]:
        """The model stopped without a stop token (max tokens): flush held text, keep the
        partial message. Returns the last deltas (no Stop event)."""
        if self._state != "content":
            return []
        events = self._deltas(self._decoder.flush())
        self._close_message()
        self._state = "ended"
        return events

    def _feed(self, token: int) -> list[Event]:
        token = self._tok.check_id(token)
        self.tokens_seen += 1
        if self._state == "ended":
            raise HarmonyError(f"token {self._describe(token)} after the end of the turn")
        if self._state == "start":
            if token != self._id["<|start|>"]:
                raise HarmonyError(f"expected <|start|> to open a message, got {self._describe(token)}"
                                   " (text outside a message)")
            self._state = "header"
            return []
        if self._state == "header":
            return self._feed_header(token)
        return self._feed_content(token)

    def _feed_header(self, token: int) -> list[Event]:
        if token == self._id["<|message|>"]:
            self._current = self._parse_header(self._tok.decode(self._header))
            self._header = []
            self._role_given = False
            self._decoder = IncrementalDecoder(self._tok)
            self._state = "content"
            name = self._current.tool_name
            return [ToolCallDelta(name, "")] if name is not None else []
        if self._tok.is_special(token) and token not in self._header_specials:
            raise HarmonyError(f"unexpected {self._describe(token)} in a message header "
                               f"{self._tok.decode(self._header)!r} (expected <|message|>)")
        self._header.append(token)
        if len(self._header) > self._max_header:
            raise HarmonyError(f"message header longer than {self._max_header} tokens: "
                               f"{self._tok.decode(self._header)[:200]!r}")
        return []

    def _feed_content(self, token: int) -> list[Event]:
        if token in self._ends:
            return self._end_message(token, self._ends[token])
        if self._tok.is_special(token):
            raise HarmonyError(f"unexpected {self._describe(token)} inside a "
                               f"{self._current.channel} message")
        return self._deltas(self._decoder.feed(token))

    def _end_message(self, token: int, reason: str | None) -> list[Event]:
        msg = self._current
        is_call = msg.recipient is not None
        if is_call and reason != "tool_calls":
            raise HarmonyError(f"tool call to {msg.recipient} ended with {self._describe(token)}, "
                               "expected <|call|>")
        if reason == "tool_calls" and not is_call:
            raise HarmonyError(f"<|call|> ended a {msg.channel} message that has no recipient "
                               "(expected to=functions.NAME in its header)")
        events = self._deltas(self._decoder.flush())
        self._close_message()
        if reason is None:
            self._state = "start"
            return events
        self.stop_reason = reason
        self._state = "ended"
        return events + [Stop(reason)]

    def _close_message(self) -> None:
        self.messages.append(self._current)
        self._current = None
        self._decoder = None

    def _deltas(self, text: str) -> list[Event]:
        if not text:
            return []
        msg = self._current
        msg.text += text
        if msg.recipient is not None:
            return [ToolCallDelta(msg.tool_name, text)]
        if msg.channel == "analysis":
            return [ReasoningDelta(text)]
        if msg.channel == "commentary":
            return [CommentaryDelta(text)]
        return [FinalDelta(text)]

    def _parse_header(self, header: str) -> ParsedMessage:
        channel, rest = _split_channel(header)
        parts = rest.replace("<|constrain|>", " <|constrain|>").split()
        if parts and parts[0] == "assistant":
            parts.pop(0)
        elif not self._role_given:
            role = parts[0] if parts else "(none)"
            raise HarmonyError(f"message header {header!r} has role {role!r}; the model may only "
                               "write assistant messages")
        recipient = content_type = None
        for part in parts:
            if part.startswith("to=") and recipient is None:
                recipient = part[3:]
            elif not part.startswith("to=") and content_type is None:
                content_type = part
            else:
                raise HarmonyError(f"unexpected {part!r} in message header {header!r}")
        if channel is None:
            raise HarmonyError(f"message header {header!r} has no channel "
                               f"(expected <|channel|> one of {', '.join(CHANNELS)})")
        if recipient is not None:
            if not recipient.startswith("functions.") or len(recipient) == len("functions."):
                raise HarmonyError(f"message header {header!r} addresses {recipient!r}; only "
                                   "function tools (to=functions.NAME) are available")
            if channel == "final":
                raise HarmonyError(f"tool call to {recipient} on the final channel "
                                   "(tool calls go to commentary)")
        return ParsedMessage(channel=channel, recipient=recipient, content_type=content_type)

    def _describe(self, token: int) -> str:
        text = self._tok.decode([token])
        return text if self._tok.is_special(token) else f"token {token} ({text!r})"


def _split_channel(header: str) -> tuple[str | None, str]:
    """'<|channel|>NAME' out of a header -> (NAME, rest of header)."""
    marker = "<|channel|>"
    index = header.find(marker)
    if index < 0:
        return None, header
    after = header[index + len(marker):]
    end = next((i for i, c in enumerate(after) if c.isspace() or c == "<"), len(after))
    channel = after[:end]
    rest = header[:index] + " " + after[end:]
    if marker in rest:
        raise HarmonyError(f"message header {header!r} has more than one <|channel|>")
    if channel not in CHANNELS:
        raise HarmonyError(f"unknown channel {channel!r} in message header {header!r} "
                           f"(expected one of {', '.join(CHANNELS)})")
    return channel, rest


def parse_completed(tokens: Iterable[int], tokenizer: Tokenizer, *,
                    after_start_role: bool = True) -> ParsedCompletion:
    """Parse a whole completion (the tokens after the prompt, stop token included if any)."""
    parser = HarmonyStreamParser(tokenizer, after_start_role=after_start_role)
    for token in tokens:
        parser.feed(token)
    parser.finish()
    msgs = parser.messages
    text = lambda pick: "".join(m.text for m in msgs if pick(m))  # noqa: E731
    return ParsedCompletion(
        reasoning=text(lambda m: m.channel == "analysis" and m.recipient is None),
        commentary=text(lambda m: m.channel == "commentary" and m.recipient is None),
        final=text(lambda m: m.channel == "final"),
        tool_calls=[ToolCall(m.tool_name, m.text) for m in msgs if m.recipient is not None],
        stop_reason=parser.stop_reason, messages=list(msgs))
