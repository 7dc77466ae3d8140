"""The tiny model's loss mask, invented names, out-of-domain chats and the evaluation's checks."""
from __future__ import annotations

import json
import random

import pytest

from tiny_model_support import default_model_dir, harmony_o200k

import data as recipe_data
import harmony_text as ht
import synthetic
from evaluate import ChatResult, first_sentence, is_honest_ood_answer, summarize
from supervision import encode_documents, supervised_pieces


def _tool_chat_with_history() -> str:
    return (ht.system_message("2026-01-02", "low", with_tools=True)
            + ht.developer_message(None, [ht.LOOKUP_SIGNATURE])
            + ht.user_message("What does a.b do?") + ht.assistant_message("final", "Does B.")
            + ht.user_message("What is the signature of c.d?")
            + ht.assistant_message("analysis", "Look up c.d.")
            + ht.tool_call({"name": "c.d"})
            + ht.tool_result({"name": "c.d", "signature": "c.d(x)"})
            + ht.assistant_message("final", "The signature is c.d(x).", ht.RETURN))


def test_loss_covers_what_the_assistant_writes_only():
    pieces = supervised_pieces(_tool_chat_with_history())
    assert "".join(p for p, _ in pieces) == _tool_chat_with_history()
    covered = "".join(p for p, s in pieces if s)
    # the earlier answer's content and end; the last turn's messages with their headers
    assert covered == ("Does B." + ht.END
                       + ht.assistant_message("analysis", "Look up c.d.")
                       + ht.tool_call({"name": "c.d"})
                       + ht.assistant_message("final", "The signature is c.d(x).", ht.RETURN))
    skipped = "".join(p for p, s in pieces if not s)
    assert "What is the signature of c.d?" in skipped and '"signature": "c.d(x)"' in skipped
    assert "Reasoning: low" in skipped


def test_source_code_is_supervised_everywhere():
    assert supervised_pieces("def f():\n    return 1\n") == [("def f():\n    return 1\n", True)]


def test_piecewise_encoding_equals_whole_document_encoding():
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    docs = [_tool_chat_with_history(), "x = 1\n\nprint(x)", _tool_chat_with_history()[:-30]]
    ids, starts, mask = encode_documents(tok, docs, sep_id=7)
    whole = [i for d in docs for i in tok.encode(d).ids + [7]]
    assert ids.tolist() == whole
    assert starts.tolist() == [0, len(tok.encode(docs[0]).ids) + 1,
                               len(tok.encode(docs[0]).ids) + len(tok.encode(docs[1]).ids) + 2]
    assert len(mask) == len(ids) and not mask[starts[0]] and mask[starts[1]]
    assert 0.1 < mask[:starts[1]].mean() < 0.6


def test_invented_names_are_new_reproducible_and_copyable():
    known = {"json.dumps"}
    a = recipe_data.invented_entries(random.Random(3), 200, known)
    b = recipe_data.invented_entries(random.Random(3), 200, known)
    assert a == b and len({e.name for e in a}) == 200
    assert all("." in e.name and e.name.replace(".", "").replace("_", "").isalnum() for e in a)
    with_sig = [e for e in a if e.signature]
    assert 0.7 * len(a) < len(with_sig) < len(a)
    assert all(e.signature.startswith(e.name + "(") and e.signature.endswith(")") for e in with_sig)
    pool = [recipe_data.Entry("json.dumps", "function", "Serialize obj.", "json.dumps(obj)")]
    samples = recipe_data.invented_tool_samples(random.Random(0), a[:40], pool)
    for s, e in zip(samples, a[:40]):
        assert json.dumps({"name": e.name}) in s.completion and e.name in s.completion.split(ht.MESSAGE)[1]
        if e.signature:
            assert e.signature in s.tool_result and f"The signature is {e.signature}." in s.final
        else:
            assert "unknown name" in s.tool_result and "could not find" in s.final


def test_out_of_domain_questions_held_out_are_never_trained_on():
    rng = random.Random(0)
    train = {synthetic.ood_question(rng, heldout=False) for _ in range(3000)}
    held = {synthetic.ood_question(rng, heldout=True) for _ in range(500)}
    assert len(train) > 500 and len(held) > 50
    assert not train & held


def test_generated_ood_and_invented_chats_parse_with_openai_harmony(tmp_path):
    h, enc = harmony_o200k(tmp_path)
    rng = random.Random(1)
    pool = [recipe_data.Entry("json.dumps", "function", "Serialize obj.", "json.dumps(obj)")]
    samples = [recipe_data.ood_sample(rng, False, pool) for _ in range(5)] \
        + [recipe_data.copy_sample(rng, pool) for _ in range(5)] \
        + recipe_data.invented_tool_samples(rng, recipe_data.invented_entries(rng, 5, set()), pool)
    for s in samples:
        tokens = enc.encode(s.prompt + s.completion, allowed_special="all")
        assert enc.decode(tokens) == s.prompt + s.completion
        msgs = enc.parse_messages_from_completion_tokens(
            enc.encode(s.completion, allowed_special="all"), h.Role.ASSISTANT, strict=True)
        if s.kind == "ood":
            assert [m.channel for m in msgs] == ["analysis", "final"]
            assert msgs[-1].content[0].text == synthetic.OOD_ANSWER
        elif s.kind == "copy":
            assert [m.channel for m in msgs] == ["final"] and msgs[0].content[0].text == s.name
            assert s.name in s.prompt.rsplit(ht.START + "user", 1)[1]
        else:
            assert msgs[-1].recipient == ht.TOOL_RECIPIENT


def test_evaluation_checks():
    assert first_sentence("Return  the sum.  Then more. ") == "Return the sum."
    assert first_sentence("No end") == "No end"
    assert first_sentence("Uses os.path.join. More.") == "Uses os.path.join."
    assert is_honest_ood_answer(synthetic.OOD_ANSWER)
    assert not is_honest_ood_answer("os.get_b: Return the current object.")
    assert not is_honest_ood_answer("The answer is 4.")
    rs = [ChatResult("tool", "a.b", True, True, True, True, states_signature=True),
          ChatResult("tool", "a.c", True, True, False, False),
          ChatResult("ood", "Hi", True, None, None, True, ood_honest=True),
          ChatResult("doc", "a.d", False, None, None, False)]
    q = summarize(rs)
    assert (q["tool_prompts"], q["tool_call_name_correct_pct"], q["ood_honest_pct"]) == (2, 50.0, 100.0)
    assert (q["well_formed_final_pct"], q["doc_first_sentence_pct"]) == (75.0, 0.0)
    assert q["tool_answer_states_signature_pct"] == 50.0 and len(q["failures"]) == 1


def _real_entries() -> list:
    return [recipe_data.Entry(n, k, "", "") for n, k in (
        ("socket.recv_fds", "function"), ("os.path.join", "function"), ("pathlib.Path", "class"),
        ("pathlib.Path.read_text", "method"), ("calendar.isleap", "function"))]


def test_familiar_names_are_built_from_real_pieces_and_are_never_real():
    real = _real_entries()
    pieces = recipe_data.name_pieces(real)
    assert pieces.modules == ("calendar", "os.path", "pathlib", "socket")
    assert pieces.classes == ("Path",)
    assert pieces.words == ("fds", "isleap", "join", "read", "recv", "text")
    known = {e.name for e in real}
    a = recipe_data.invented_entries(random.Random(5), 300, known, real, familiar=1.0)
    assert a == recipe_data.invented_entries(random.Random(5), 300, known, real, familiar=1.0)
    assert len({e.name for e in a}) == 300 and not known & {e.name for e in a}
    for e in a:
        module, rest = next((m, e.name[len(m) + 1:]) for m in pieces.modules if e.name.startswith(m + "."))
        parts = rest.split(".")
        assert len(parts) <= 2 and (len(parts) == 1 or parts[0] in pieces.classes), e.name
        assert e.kind in (("class", "function") if len(parts) == 1 else ("method",)), e
    # a near name keeps everything but the last component, which it (nearly always) changes
    nears = [synthetic.near_name(random.Random(i), "socket.recv_fds", pieces.words) for i in range(50)]
    assert all(n.startswith("socket.") for n in nears)
    assert sum(n != "socket.recv_fds" for n in nears) >= 45
    none = recipe_data.invented_entries(random.Random(5), 50, known, real, familiar=0.0)
    assert not any(e.name.split(".")[0] in pieces.modules for e in none)


def test_heldout_prompts_do_not_move_with_the_training_mix(tmp_path):
    """Held-out prompts come from their own seeded stream: recipes with different training mixes
    are evaluated on the same questions."""
    a, b = tmp_path / "a", tmp_path / "b"
    recipe_data.build(a, 0, 1, 0.05, invented=40, ood=10, code_fraction=0.0, copies=5, familiar=0.5)
    recipe_data.build(b, 0, 1, 0.05, invented=80, ood=30, code_fraction=0.0, copies=20, familiar=0.0)
    held = (a / "heldout_prompts.jsonl").read_text()
    assert held == (b / "heldout_prompts.jsonl").read_text()
    kinds = [json.loads(line)["kind"] for line in held.splitlines()]
    assert kinds.count("ood") == recipe_data.HELDOUT_OOD and kinds.count("tool") > 50
    assert (a / "train.txt").read_text() != (b / "train.txt").read_text()


def test_a_name_is_the_same_tokens_after_a_space_and_after_a_quote():
    pytest.importorskip("tokenizers")
    import tokenizer as recipe_tokenizer
    text = ("What is the signature of json.dumps? The user wants json.dumps. "
            '{"name": "json.dumps"} e.g. 3.14 ') * 20
    tok = recipe_tokenizer.train_tokenizer(text, 300)
    after_space = tok.encode("of json.dumps?").tokens
    after_quote = tok.encode('{"name": "json.dumps"}').tokens
    name = ["json", ".", "dumps"]
    assert after_space[-5:] == ["Ġ", *name, "?"] and after_quote[-4:-1] == name, (after_space, after_quote)
    assert [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("the user's 3.14")] == [
        "the", "Ġuser", "'s", "Ġ3", ".", "14"]                      # GPT-2's rule elsewhere
    assert tok.decode(tok.encode(text[:200]).ids) == text[:200]


def test_signature_parameters_split_at_top_level_commas_only():
    assert synthetic.split_params("a, b=(1, 2), *, c=',', d={'x': [1, 2]}, **kw") == (
        "a", "b=(1, 2)", "*", "c=','", "d={'x': [1, 2]}", "**kw")
    assert synthetic.split_params("") == ()
    assert synthetic.split_params('sep="(", /') == ('sep="("', "/")


def test_familiar_signatures_reuse_real_parameters_on_the_new_name():
    real = [recipe_data.Entry("difflib.HtmlDiff.make_file", "method", "",
                              "difflib.HtmlDiff.make_file(self, fromlines, tolines, numlines=5, *, "
                              "charset='utf-8')"),
            recipe_data.Entry("json.dumps", "function", "", "json.dumps(obj, *, indent=None)")]
    pieces = recipe_data.name_pieces(real)
    assert ("obj", "*", "indent=None") in pieces.param_lists and "charset='utf-8'" in pieces.params
    for i in range(40):
        sig = synthetic.familiar_signature(random.Random(i), "socket.recv_fd", pieces)
        params = synthetic.split_params(sig[len("socket.recv_fd("):-1])
        base = min(pieces.param_lists, key=lambda ps: sum(a != b for a, b in zip(ps, params))
                   + abs(len(ps) - len(params)))
        assert len(params) == len(base) and sum(a != b for a, b in zip(params, base)) <= 1, sig
        assert set(params) <= set(pieces.params)
        assert all(("=" in a) == ("=" in b) for a, b in zip(params, base))
    made = recipe_data.invented_entries(random.Random(2), 100, set(), real, familiar=1.0,
                                        familiar_signatures=1.0)
    with_sig = [e for e in made if e.signature]
    assert with_sig and all(set(synthetic.split_params(e.signature[len(e.name) + 1:-1])) <= set(pieces.params)
                            for e in with_sig)
