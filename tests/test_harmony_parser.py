"""Streaming harmony parser on scripted model outputs: events, tool calls, malformed streams, and
agreement with openai-harmony's StreamableParser (per-token deltas and parsed messages)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from harmony_fixtures import encode_script, harmony_encoding, o200k, tiny  # noqa: F401

from gptoss_edge.runtime.chat.harmony import (CommentaryDelta, FinalDelta, HarmonyError,
                                         HarmonyStreamParser, ReasoningDelta, Stop, ToolCallDelta,
                                         parse_completed, stop_token_ids)

REASON_THEN_FINAL = ("<|channel|>", "analysis", "<|message|>", "User greets; answer with 😀 and 𝔘.",
                     "<|end|>", "<|start|>", "assistant", "<|channel|>", "final", "<|message|>",
                     "Hello! Grüße 👋🏽 — 日本語.", "<|return|>")
TOOL_CALL = ("<|channel|>", "analysis", "<|message|>", "Need the signature.", "<|end|>",
             "<|start|>", "assistant", "<|channel|>", "commentary to=functions.lookup_signature ",
             "<|constrain|>", "json", "<|message|>", '{"name": "os.path.join", "café": "☕"}',
             "<|call|>")
PREAMBLE_CALL = ("<|channel|>", "commentary", "<|message|>", "Let me check.", "<|end|>",
                 "<|start|>", "assistant", " to=functions.now", "<|channel|>", "commentary json",
                 "<|message|>", "{}", "<|call|>")
WELL_FORMED = {"reason_then_final": REASON_THEN_FINAL, "tool_call": TOOL_CALL,
               "preamble_call": PREAMBLE_CALL,
               "constrain_without_space": ("<|channel|>", "commentary to=functions.f", "<|constrain|>",
                                           "json", "<|message|>", '{"a": 1}', "<|call|>"),
               "final_only": ("<|channel|>", "final", "<|message|>", "4", "<|return|>")}


def _events(tok, ids):
    parser = HarmonyStreamParser(tok)
    return parser, [e for t in ids for e in parser.feed(t)]


def _joined(events, kind):
    return "".join(e.text for e in events if isinstance(e, kind))


@pytest.mark.parametrize("which", ["o200k", "tiny"])
def test_reasoning_then_final(request, which):
    tok = request.getfixturevalue(which)
    parser, events = _events(tok, encode_script(tok, *REASON_THEN_FINAL))
    assert _joined(events, ReasoningDelta) == "User greets; answer with 😀 and 𝔘."
    assert _joined(events, FinalDelta) == "Hello! Grüße 👋🏽 — 日本語."
    assert events[-1] == Stop("stop") and parser.done and parser.stop_reason == "stop"
    kinds = [type(e) for e in events]
    assert kinds.index(FinalDelta) > max(i for i, k in enumerate(kinds) if k is ReasoningDelta)
    assert sum(k is ReasoningDelta for k in kinds) > 3    # streamed, not one blob


@pytest.mark.parametrize("which", ["o200k", "tiny"])
def test_tool_call_with_json_arguments(request, which):
    tok = request.getfixturevalue(which)
    parser, events = _events(tok, encode_script(tok, *TOOL_CALL))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0] == ToolCallDelta("lookup_signature", "")      # name announced at the header
    assert {c.name for c in calls} == {"lookup_signature"}
    args = "".join(c.arguments_fragment for c in calls)
    assert json.loads(args) == {"name": "os.path.join", "café": "☕"}
    assert events[-1] == Stop("tool_calls")
    result = parse_completed(encode_script(tok, *TOOL_CALL), tok)
    assert result.stop_reason == "tool_calls" and result.reasoning == "Need the signature."
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("lookup_signature", args)]
    assert result.messages[1].content_type == "<|constrain|>json" and result.final == ""


def test_preamble_and_recipient_before_channel(o200k):
    parser, events = _events(o200k, encode_script(o200k, *PREAMBLE_CALL))
    assert _joined(events, CommentaryDelta) == "Let me check."
    assert parser.messages[1].recipient == "functions.now"
    assert parser.messages[1].content_type == "json"
    assert events[-1] == Stop("tool_calls")


def test_truncated_stream_finish(o200k):
    ids = encode_script(o200k, "<|channel|>", "final", "<|message|>", "Partial 𝔘")
    assert o200k.token_bytes(ids[-1]) == b"\x98"      # 𝔘 spans 3 byte tokens; withhold the last
    parser, events = _events(o200k, ids[:-1])
    assert _joined(events, FinalDelta) == "Partial "   # the incomplete character is held back
    tail = parser.finish()
    assert _joined(tail, FinalDelta) == "\ufffd" and parser.stop_reason is None
    result = parse_completed(ids, o200k)
    assert result.stop_reason is None and result.final == "Partial 𝔘"


def test_stop_token_ids(o200k, tiny):
    assert stop_token_ids(o200k) == {200002, 200012}
    assert stop_token_ids(tiny) == {tiny.special_id("<|return|>"), tiny.special_id("<|call|>")}


@pytest.mark.parametrize("script", sorted(WELL_FORMED))
def test_agrees_with_openai_harmony(o200k, harmony_encoding, script):
    oh = pytest.importorskip("openai_harmony")
    ids = encode_script(o200k, *WELL_FORMED[script])
    ours = HarmonyStreamParser(o200k)
    theirs = oh.StreamableParser(harmony_encoding, oh.Role.ASSISTANT)
    for token in ids:
        events = ours.feed(token)
        theirs.process(token)
        text = "".join(getattr(e, "text", getattr(e, "arguments_fragment", "")) for e in events)
        assert text == (theirs.last_content_delta or ""), f"delta differs at token {token}"
    assert [(m.channel, m.recipient, m.content_type, m.text) for m in ours.messages] == \
        [(m.channel, m.recipient, m.content_type, m.content[0].text) for m in theirs.messages]


MALFORMED = {
    "text_after_end": (("<|channel|>", "final", "<|message|>", "hi", "<|end|>", "stray"),
                       "expected <|start|> to open a message"),
    "unknown_channel": (("<|channel|>", "thinking", "<|message|>"), "unknown channel 'thinking'"),
    "no_channel": (("<|message|>",), "has no channel"),
    "header_too_long": (("<|channel|>", "final " + "x " * 200), "header longer than 128 tokens"),
    "call_without_recipient": (("<|channel|>", "commentary", "<|message|>", "x", "<|call|>"),
                               "no recipient"),
    "start_inside_content": (("<|channel|>", "final", "<|message|>", "x", "<|start|>"),
                             "unexpected <|start|> inside a final message"),
    "stop_in_header": (("<|channel|>", "final", "<|return|>"), "unexpected <|return|> in a message header"),
    "non_function_recipient": (("<|channel|>", "analysis to=python", "<|message|>"),
                               "only function tools"),
    "tool_call_on_final": (("<|channel|>", "final to=functions.f", "<|message|>"), "final channel"),
    "tool_call_ends_with_end": (("<|channel|>", "commentary to=functions.f", "<|message|>", "{}",
                                 "<|end|>"), "expected <|call|>"),
    "model_writes_user_turn": (("<|channel|>", "final", "<|message|>", "a", "<|end|>", "<|start|>",
                                "user", "<|message|>"), "role 'user'"),
    "two_channels": (("<|channel|>", "final", "<|channel|>", "analysis", "<|message|>"),
                     "more than one <|channel|>"),
    "token_after_stop": (("<|channel|>", "final", "<|message|>", "a", "<|return|>", "b"),
                         "after the end of the turn"),
    "junk_in_header": (("<|channel|>", "commentary to=functions.f json extra", "<|message|>"),
                       "unexpected 'extra'"),
}


@pytest.mark.parametrize("which", ["o200k", "tiny"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_output_raises_harmony_error(request, which, case):
    tok = request.getfixturevalue(which)
    script, message = MALFORMED[case]
    parser = HarmonyStreamParser(tok)
    with pytest.raises(HarmonyError) as err:
        for token in encode_script(tok, *script):
            parser.feed(token)
    assert message in str(err.value)
    with pytest.raises(HarmonyError, match="already failed"):
        parser.feed(tok.encode("x")[0])


def test_out_of_range_token_is_a_harmony_error(tiny):
    with pytest.raises(HarmonyError, match="outside the vocabulary"):
        HarmonyStreamParser(tiny).feed(tiny.vocab_size + 5)


_ALPHABET = list("abcXYZ 019 .,:;{}[]\"'\n\t") + ["é", "ß", "日本", "😀", "𝔘", "👋🏽", "—", "<|", "|>"]


def _random_turn(rng) -> tuple[str, ...]:
    """A well-formed assistant turn: 1-4 messages, the last ending with <|return|> or <|call|>."""
    text = lambda: "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 25)))  # noqa: E731
    parts: list[str] = []
    count = rng.randint(1, 4)
    for index in range(count):
        last = index == count - 1
        call = last and rng.random() < 0.4
        if index:
            parts += ["<|start|>", "assistant"]
        if call:
            args = ["<|channel|>", "commentary to=functions.tool_" + str(rng.randint(0, 9)) + " ",
                    "<|constrain|>", "json"] if rng.random() < 0.5 else \
                   ["<|channel|>", "commentary to=functions.f json"]
            parts += args + ["<|message|>", text(), "<|call|>"]
            continue
        channel = rng.choice(["analysis", "commentary"] if not last else ["final"])
        parts += ["<|channel|>", channel, "<|message|>", text(), "<|return|>" if last else "<|end|>"]
    return tuple(parts)


def test_random_turns_agree_with_openai_harmony(o200k, harmony_encoding):
    oh = pytest.importorskip("openai_harmony")
    rng = random.Random(2026)
    for _ in range(60):
        ids = encode_script(o200k, *_random_turn(rng))
        ours = HarmonyStreamParser(o200k)
        theirs = oh.StreamableParser(harmony_encoding, oh.Role.ASSISTANT)
        for token in ids:
            events = ours.feed(token)
            theirs.process(token)
            text = "".join(getattr(e, "text", getattr(e, "arguments_fragment", "")) for e in events)
            assert text == (theirs.last_content_delta or "")
        assert ours.done
        assert [(m.channel, m.recipient, m.content_type, m.text) for m in ours.messages] == \
            [(m.channel, m.recipient, m.content_type, m.content[0].text) for m in theirs.messages]


@pytest.mark.parametrize("which", ["o200k", "tiny"])
def test_random_token_soup_only_raises_harmony_error(request, which):
    # Whatever the model emits, the parser either accepts it or raises HarmonyError: the server
    # relies on this to end one stream cleanly instead of crashing.
    tok = request.getfixturevalue(which)
    rng = np.random.default_rng(5)
    specials = list(tok.special_tokens().values())[:40]
    text_ids = tok.encode("<|channel|>final to=functions.x json analysis commentary 日本 😀 {}")
    pool = np.array(specials + text_ids * 3)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        parser = HarmonyStreamParser(tok, after_start_role=bool(rng.integers(2)))
        try:
            for token in rng.choice(pool, size=int(rng.integers(1, 40))):
                parser.feed(int(token))
            parser.finish()
            outcomes["ok"] += 1
        except HarmonyError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and outcomes["ok"] > 0


def test_numpy_ids_and_reasoning_token_count(o200k):
    ids = np.array(encode_script(o200k, *REASON_THEN_FINAL), dtype=np.int64)
    parser = HarmonyStreamParser(o200k)
    reasoning_tokens = 0
    for token in ids:
        parser.feed(token)
        current = parser.current
        reasoning_tokens += current is not None and current.channel == "analysis"
    analysis_text = o200k.encode("User greets; answer with 😀 and 𝔘.")
    # <|message|> (which opens the content) plus the content tokens of the analysis message
    assert reasoning_tokens == 1 + len(analysis_text)
    assert parser.done and parser.current is None
