"""The tiny model's training text is real harmony (checked against openai_harmony on o200k) and
its data generator is reproducible."""
from __future__ import annotations

import json
import random

import pytest

from tiny_model_support import harmony_o200k  # noqa: F401  (puts the recipe on sys.path)

import data as recipe_data
import harmony_text as ht


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    return harmony_o200k(tmp_path_factory.mktemp("o200k"))


@pytest.fixture(scope="module")
def entries():
    return recipe_data.harvest(["json", "textwrap"])


def _reference(h, date, effort, instructions, with_tools, turns):
    """The same conversation built with openai_harmony objects."""
    sys_content = (h.SystemContent.new().with_conversation_start_date(date)
                   .with_reasoning_effort(h.ReasoningEffort[effort.upper()]))
    msgs = [h.Message.from_role_and_content(h.Role.SYSTEM, sys_content)]
    if instructions or with_tools:
        dev = h.DeveloperContent.new()
        if instructions:
            dev = dev.with_instructions(instructions)
        if with_tools:
            dev = dev.with_function_tools([h.ToolDescription.new(
                ht.TOOL_NAME, ht.TOOL_DESCRIPTION, parameters=ht.TOOL_PARAMETERS)])
        msgs.append(h.Message.from_role_and_content(h.Role.DEVELOPER, dev))
    return msgs + turns


def test_tool_chat_matches_openai_harmony(harmony):
    h, enc = harmony
    turns = [
        h.Message.from_role_and_content(h.Role.USER, "What is the signature of json.dumps?"),
        h.Message.from_role_and_content(h.Role.ASSISTANT, "I will look it up.").with_channel("analysis"),
        h.Message.from_role_and_content(h.Role.ASSISTANT, json.dumps({"name": "json.dumps"}))
        .with_channel("commentary").with_recipient(ht.TOOL_RECIPIENT).with_content_type("<|constrain|>json"),
        h.Message.from_author_and_content(h.Author.new(h.Role.TOOL, ht.TOOL_RECIPIENT),
                                          json.dumps({"signature": "json.dumps(obj)"}))
        .with_recipient("assistant").with_channel("commentary"),
        h.Message.from_role_and_content(h.Role.ASSISTANT, "It is json.dumps(obj).").with_channel("final"),
    ]
    convo = h.Conversation.from_messages(_reference(h, "2026-03-04", "low", "Be brief.", True, turns))
    expected = enc.decode(enc.render_conversation_for_training(
        convo, h.RenderConversationConfig(auto_drop_analysis=False)))
    ours = (ht.system_message("2026-03-04", "low", with_tools=True)
            + ht.developer_message("Be brief.", [ht.LOOKUP_SIGNATURE])
            + ht.user_message("What is the signature of json.dumps?")
            + ht.assistant_message("analysis", "I will look it up.")
            + ht.tool_call({"name": "json.dumps"})
            + ht.tool_result({"signature": "json.dumps(obj)"})
            + ht.assistant_message("final", "It is json.dumps(obj).", ht.RETURN))
    assert ours == expected


def test_doc_chat_with_history_matches_openai_harmony(harmony):
    h, enc = harmony
    turns = [
        h.Message.from_role_and_content(h.Role.USER, "What does a do?"),
        h.Message.from_role_and_content(h.Role.ASSISTANT, "a: A.").with_channel("final"),
        h.Message.from_role_and_content(h.Role.USER, "Explain b."),
    ]
    convo = h.Conversation.from_messages(_reference(h, "2026-12-01", "high", None, False, turns))
    expected = enc.decode(enc.render_conversation_for_completion(convo, h.Role.ASSISTANT))
    ours = (ht.system_message("2026-12-01", "high", with_tools=False)
            + ht.user_message("What does a do?") + ht.assistant_message("final", "a: A.")
            + ht.user_message("Explain b.") + ht.ASSISTANT_PROMPT)
    assert ours == expected


def test_generated_samples_parse_with_openai_harmony(harmony, entries):
    """Every sample's completion parses with harmony's own strict parser, with the right channels."""
    h, enc = harmony
    table = {e.name: e for e in entries}
    samples = recipe_data.make_samples(random.Random(0), entries[:20], table, per_entry=1)
    assert {s.kind for s in samples} == {"doc", "tool"}
    for s in samples:
        tokens = enc.encode(s.completion, allowed_special="all")
        msgs = enc.parse_messages_from_completion_tokens(tokens, h.Role.ASSISTANT, strict=True)
        ours = ht.parse_assistant_completion(s.completion)
        assert [m.channel for m in msgs] == [m.channel for m in ours]
        if s.kind == "tool":
            assert msgs[-1].recipient == ht.TOOL_RECIPIENT and msgs[-1].content_type == "<|constrain|>json"
            assert json.loads(msgs[-1].content[0].text) == {"name": s.name}
            final = ht.parse_assistant_completion(s.final)
            assert [m.channel for m in final] == ["final"]
        else:
            assert [m.channel for m in msgs] == ["analysis", "final"]


def test_parser_rejects_malformed_completions():
    good = "<|channel|>final<|message|>hi<|return|>"
    assert ht.parse_assistant_completion(good)[0].content == "hi"
    bad = {
        "<|channel|>final<|message|>hi": "not terminated",
        "<|channel|>analysis<|message|>hi<|return|>": "after a 'analysis'",
        "<|channel|>final<|message|>hi<|end|>": "does not end",
        "<|channel|>chat<|message|>hi<|return|>": "malformed assistant header",
        "<|channel|>final<|message|>a<|channel|>b<|return|>": "special token inside",
        "<|channel|>final<|message|>hi<|call|>": "without a commentary recipient",
    }
    for text, why in bad.items():
        with pytest.raises(ht.HarmonyFormatError, match=why):
            ht.parse_assistant_completion(text)


def test_harvest_and_split_are_deterministic(entries):
    again = recipe_data.harvest(["json", "textwrap"])
    assert entries == again
    names = {e.name for e in entries}
    assert {"json.dumps", "textwrap.dedent"} <= names
    dumps = next(e for e in entries if e.name == "json.dumps")
    assert dumps.signature.startswith("json.dumps(obj, *") and "JSON" in dumps.summary
    train, held = recipe_data.split_names(entries, seed=0, heldout_fraction=0.2)
    assert not {e.name for e in train} & {e.name for e in held}
    assert len(held) == int(len(entries) * 0.2)
    assert recipe_data.lookup_signature("json.dumps", {e.name: e for e in entries})["signature"] \
        == dumps.signature
    assert "error" in recipe_data.lookup_signature("json.nope", {})
