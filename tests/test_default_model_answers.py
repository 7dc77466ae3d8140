"""The shipped default model answers what it is asked (issue 11): the demo's three questions, and
names it has never seen copied into its tool call and answer. Greedy, the reference model on the
shipped MXFP4 checkpoint, prompts rendered as the recipe renders them."""
from __future__ import annotations

import inspect
import json
import os.path
import random

import pytest

from tiny_model_support import default_model_dir, reference_model

import data as recipe_data
from evaluate import first_sentence, quality


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    model_dir = default_model_dir()
    return reference_model(model_dir), tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def _entry(name: str, obj) -> recipe_data.Entry:
    return recipe_data.Entry(name, "function", recipe_data.summarize(obj.__doc__),
                             f"{name}{inspect.signature(obj)}")


def test_the_demo_questions_get_right_answers(model_and_tokenizer):
    """make demo's questions (scripts/demo.py): all three must come out right."""
    model, tok = model_and_tokenizer
    dumps, join = _entry("json.dumps", json.dumps), _entry("os.path.join", os.path.join)
    table = {e.name: e for e in (dumps, join)}
    rng = random.Random(7)
    chats = [recipe_data.doc_sample(rng, dumps, [dumps]), recipe_data.tool_sample(rng, join, [dumps], table),
             recipe_data.ood_sample(rng, heldout=True, pool=[dumps])]
    q = quality(model, tok, [vars(c) for c in chats], table)
    assert first_sentence(dumps.summary) == "Serialize ``obj`` to a JSON formatted ``str``."
    assert q["doc_first_sentence_pct"] == 100, q["failures"]          # json.dumps' docstring
    assert q["tool_call_name_correct_pct"] == 100, q["failures"]      # {"name": "os.path.join"}
    assert q["tool_answer_states_signature_pct"] == 100, q["failures"]
    assert q["ood_honest_pct"] == 100, q["failures"]


def test_names_never_seen_are_copied_into_the_call_and_the_answer(model_and_tokenizer):
    """Invented names (the recipe's generator, a seed the recipe does not use): copying is the only
    way to get them right. The recipe measures 96% right `name` on 106 held-out stdlib names; on
    invented names this model gets 10 of 12 names and 10 of 12 signatures here (names 9 and 11 of
    12 with two other seeds: 83% over 36; the model shipped before got 64%, the one before it 0).
    The floor, two thirds, leaves two chats of margin for float differences between machines
    flipping a near-tie in greedy decoding, and still fails a model that copies like the last one."""
    model, tok = model_and_tokenizer
    rng = random.Random(20261206)
    invented = [e for e in recipe_data.invented_entries(rng, 40, set()) if e.signature][:12]
    table = {e.name: e for e in invented}
    history_pool = [_entry("json.dumps", json.dumps)]        # earlier exchanges, when drawn
    chats = [vars(recipe_data.tool_sample(rng, e, history_pool, table)) for e in invented]
    q = quality(model, tok, chats, table)
    assert q["tool_prompts"] == 12 and q["tool_call_valid_json_pct"] == 100, q["failures"]
    assert q["tool_call_name_correct_pct"] >= 200 / 3, q["failures"]          # 8 of 12
    assert q["tool_answer_states_signature_pct"] >= 200 / 3, q["failures"]
