"""Training text for the tiny default model, generated only from Python's standard library.

Kinds of documents (separated by <|endoftext|> in the corpus files):
  * doc chats:  "What does json.dumps do?" -> analysis naming it -> final answer = the docstring's
                first paragraph (sometimes after earlier exchanges of the same kind),
  * tool chats: "What is the signature of json.dumps?" -> analysis naming it -> commentary tool
                call `functions.lookup_signature` with JSON arguments -> tool result -> final
                answer stating the returned signature (or that it was not found),
  * invented tool chats: the same with invented names (synthetic.py), so copying the name and the
                returned signature is the only way to predict them; some get error results,
  * out-of-domain chats: greetings, arithmetic, general questions -> one short honest answer,
  * copy chats: "Repeat exactly: <invented names and signatures>" -> the same text (final only),
  * source code: a fraction of the chunks of the standard library's own .py files.
Names (functions/classes) are split into train and held-out sets by a seeded shuffle, so held-out
perplexity and copying are measured on names the model never saw.

    python recipes/tiny_model/data.py OUT_DIR [--seed 0]
writes OUT_DIR/train.txt, OUT_DIR/train_short.txt (the same chats from the last question on, for
the first phase of training), OUT_DIR/train_docs.txt (only the doc chats, short: the drill that
makes the docstrings' first lines stick), OUT_DIR/heldout.txt, OUT_DIR/prompts.jsonl (evaluation prompts from the
training chats), OUT_DIR/heldout_prompts.jsonl (held-out names and out-of-domain questions),
OUT_DIR/entries.jsonl (the tool's table) and OUT_DIR/data_stats.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import random
import re
import sys
import warnings
from pathlib import Path

import synthetic
from harmony_text import (ASSISTANT_PROMPT, ENDOFTEXT, LOOKUP_SIGNATURE, RETURN, START, assistant_message,
                          developer_message, system_message, tool_call, tool_result, user_message)

# A fixed list, so the corpus does not depend on which optional modules happen to import.
MODULES = (
    "abc argparse array ast base64 binascii bisect calendar cmath codecs colorsys configparser "
    "contextlib copy csv dataclasses datetime decimal difflib email.utils enum filecmp fnmatch "
    "fractions functools getpass glob gzip hashlib heapq hmac html http.client inspect io "
    "ipaddress itertools json keyword linecache locale logging math mimetypes numbers operator "
    "os os.path pathlib pickle platform pprint queue random re secrets shlex shutil socket "
    "sqlite3 statistics string struct subprocess tarfile tempfile textwrap threading time "
    "timeit tokenize traceback types typing unicodedata urllib.parse uuid warnings weakref "
    "zipfile zlib"
).split()

DOC_QUESTIONS = ("What does {n} do?", "What is {n} for?", "Explain {n}.", "What does {n} do in Python?",
                 "Can you tell me what {n} does?", "Describe {n}.")
SIG_QUESTIONS = ("What is the signature of {n}?", "How do I call {n}?", "What arguments does {n} take?",
                 "Show me the signature of {n}.", "Which parameters does {n} accept?")
INSTRUCTIONS = (None, "Answer questions about the Python standard library.",
                "You are a concise assistant for Python programmers.")
REASONING = ("low", "medium", "high")
MAX_SUMMARY = 240
MAX_SIGNATURE = 160


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str          # dotted, e.g. json.dumps or pathlib.Path.exists
    kind: str          # function | class | method
    summary: str       # first docstring paragraph, one line
    signature: str     # "json.dumps(obj, *, skipkeys=False, ...)" or "" when unknown


# ---- harvesting the standard library -------------------------------------------------------

def summarize(doc: str) -> str:
    """First prose paragraph of a docstring, whitespace collapsed, cut at a sentence end."""
    paras = [p for p in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if p.strip()]
    # builtins often start with a signature line such as "dumps(obj, ...) -> str"
    while paras and re.match(r"^[\w.]+\(.*\)(\s*->.*)?$", paras[0].strip().splitlines()[0]) \
            and len(paras[0].splitlines()) == 1:
        paras = paras[1:]
    if not paras:
        return ""
    text = " ".join(paras[0].split())
    if len(text) > MAX_SUMMARY:
        cut = text.rfind(". ", 0, MAX_SUMMARY)
        text = text[:cut + 1] if cut > 40 else text[:MAX_SUMMARY].rsplit(" ", 1)[0] + " ..."
    return text


def signature_of(obj, name: str) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    if len(sig) > MAX_SIGNATURE or "<" in sig:      # skip reprs like <object object at 0x..>
        return ""
    return f"{name}{sig}"


def _entry(obj, name: str, kind: str) -> Entry | None:
    doc = inspect.getdoc(obj) if not isinstance(obj, type) else obj.__doc__
    summary = summarize(doc) if isinstance(doc, str) else ""
    if len(summary) < 12:
        return None
    return Entry(name, kind, summary, signature_of(obj, name))


def _defined_in(obj, mod_name: str) -> bool:
    """False for names a module merely re-exports from another public module."""
    home = getattr(obj, "__module__", None) or ""
    return home == mod_name or home.startswith("_") or home in ("posix", "posixpath", "builtins")


def harvest(modules=MODULES) -> list[Entry]:
    """Public functions, classes and their methods with docstrings, sorted by name."""
    entries: dict[str, Entry] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod_name in modules:
            mod = importlib.import_module(mod_name)
            for attr in sorted(vars(mod)):
                obj = getattr(mod, attr)
                if attr.startswith("_"):
                    continue
                if not (inspect.isroutine(obj) or inspect.isclass(obj)) \
                        or not _defined_in(obj, mod_name):
                    continue
                full = f"{mod_name}.{attr}"
                e = _entry(obj, full, "class" if inspect.isclass(obj) else "function")
                if e:
                    entries.setdefault(full, e)
                if inspect.isclass(obj):
                    for meth in sorted(vars(obj)):
                        fn = vars(obj)[meth]
                        if meth.startswith("_") or not inspect.isroutine(fn):
                            continue
                        e = _entry(getattr(obj, meth), f"{full}.{meth}", "method")
                        if e:
                            entries.setdefault(e.name, e)
    return [entries[k] for k in sorted(entries)]


def lookup_signature(name: str, table: dict[str, Entry]) -> dict:
    """The tool itself: what functions.lookup_signature returns for a dotted name."""
    e = table.get(name)
    if e is None:
        return {"error": f"unknown name {name}"}
    if not e.signature:
        return {"name": name, "error": "signature not available"}
    return {"name": name, "signature": e.signature}


def source_chunks(modules=MODULES, max_chars: int = 1400) -> list[str]:
    """The modules' own source, cut at blank lines into chunks of at most max_chars."""
    chunks: list[str] = []
    seen: set[str] = set()
    for mod_name in modules:
        try:
            path = inspect.getsourcefile(importlib.import_module(mod_name))
        except TypeError:
            continue                    # a built-in module has no source
        if not path or path in seen:
            continue
        seen.add(path)
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        buf = ""
        for block in text.split("\n\n"):
            block = block[:max_chars]
            if buf and len(buf) + len(block) + 2 > max_chars:
                chunks.append(buf)
                buf = ""
            buf = f"{buf}\n\n{block}" if buf else block
        if buf.strip():
            chunks.append(buf)
    return chunks


# ---- conversations ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sample:
    kind: str            # "doc", "tool", "ood" or "copy"
    name: str
    prompt: str          # rendered text up to and including "<|start|>assistant"
    completion: str      # what the assistant generates after the prompt (ends <|return|>/<|call|>)
    tool_result: str = ""      # tool turn (tool chats only)
    final: str = ""            # final answer after the tool result, "<|start|>assistant" excluded


def header(rng: random.Random, with_tools: bool) -> str:
    date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    text = system_message(date, rng.choice(REASONING), with_tools)
    instructions = rng.choice(INSTRUCTIONS)
    if with_tools or instructions:
        text += developer_message(instructions, [LOOKUP_SIGNATURE] if with_tools else [])
    return text


def _kind_word(e: Entry) -> str:
    return {"class": "class", "function": "function", "method": "method"}[e.kind]


def doc_answer(e: Entry) -> tuple[str, str]:
    module = e.name.rsplit(".", 1)[0]
    analysis = (f"The user asks what {e.name} does. It is a {_kind_word(e)} in {module}. "
                f"I will answer from its docstring.")
    return analysis, e.summary


def history(rng: random.Random, table: list[Entry]) -> str:
    """Earlier exchanges, rendered as a later turn sees them (analysis dropped, finals end <|end|>)."""
    text = ""
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
        e = rng.choice(table)
        text += (user_message(rng.choice(DOC_QUESTIONS).format(n=e.name))
                 + assistant_message("final", doc_answer(e)[1]))
    return text


def doc_sample(rng: random.Random, e: Entry, pool: list[Entry]) -> Sample:
    prompt = header(rng, with_tools=rng.random() < 0.6)
    prompt += history(rng, pool)
    prompt += user_message(rng.choice(DOC_QUESTIONS).format(n=e.name)) + ASSISTANT_PROMPT
    analysis, final = doc_answer(e)
    completion = (assistant_message("analysis", analysis)[len(ASSISTANT_PROMPT):]
                  + assistant_message("final", final, RETURN))
    return Sample("doc", e.name, prompt, completion)


def tool_sample(rng: random.Random, e: Entry, pool: list[Entry], table: dict[str, Entry]) -> Sample:
    prompt = header(rng, with_tools=True)
    prompt += history(rng, pool)
    prompt += user_message(rng.choice(SIG_QUESTIONS).format(n=e.name)) + ASSISTANT_PROMPT
    analysis = f"The user wants the signature of {e.name}. I will look it up with lookup_signature."
    completion = (assistant_message("analysis", analysis)[len(ASSISTANT_PROMPT):]
                  + tool_call({"name": e.name}))
    result = lookup_signature(e.name, table)
    final = tool_answer(e.name, result)
    return Sample("tool", e.name, prompt, completion, tool_result(result),
                  assistant_message("final", final, RETURN)[len(ASSISTANT_PROMPT):])


def tool_answer(name: str, result: dict) -> str:
    """The final answer after a tool result: its signature, or that none was found."""
    if "signature" in result:
        return f"The signature is {result['signature']}."
    return f"I could not find the signature of {name}."


OOD_ANALYSIS = "The user's message is not a question about Python's standard library."


def ood_sample(rng: random.Random, heldout: bool, pool: list[Entry]) -> Sample:
    """A question outside the domain, answered by saying what the model can do."""
    prompt = header(rng, with_tools=rng.random() < 0.5) + history(rng, pool)
    question = synthetic.ood_question(rng, heldout)
    prompt += user_message(question) + ASSISTANT_PROMPT
    completion = (assistant_message("analysis", OOD_ANALYSIS)[len(ASSISTANT_PROMPT):]
                  + assistant_message("final", synthetic.OOD_ANSWER, RETURN))
    return Sample("ood", question, prompt, completion)


def copy_sample(rng: random.Random, pool: list[Entry], pieces: synthetic.NamePieces | None = None,
                familiar: float = 0.0, familiar_signatures: float = 0.0) -> Sample:
    """"Repeat exactly: <invented text>" -> the text: the densest copying lesson."""
    text = synthetic.copy_text(rng, pieces, familiar, familiar_signatures)
    prompt = header(rng, with_tools=rng.random() < 0.3) + history(rng, pool)
    prompt += user_message(rng.choice(synthetic.COPY_REQUESTS).format(t=text)) + ASSISTANT_PROMPT
    return Sample("copy", text, prompt, assistant_message("final", text, RETURN)[len(ASSISTANT_PROMPT):])


def name_pieces(entries: list[Entry]) -> synthetic.NamePieces:
    """The modules, class names and function-name words of real entries (sorted, distinct)."""
    modules, classes, words, param_lists = set(), set(), set(), set()
    for e in entries:
        if e.signature:
            param_lists.add(synthetic.split_params(e.signature[len(e.name) + 1:e.signature.rindex(")")]))
        parts = e.name.split(".")
        cut = -2 if e.kind == "method" else -1
        modules.add(".".join(parts[:cut]))
        if e.kind == "class":
            classes.add(parts[-1])
        else:
            words.update(w for w in parts[-1].split("_") if w)
    return synthetic.NamePieces(tuple(sorted(modules)), tuple(sorted(classes)), tuple(sorted(words)),
                                tuple(sorted(param_lists)), tuple(sorted({p for ps in param_lists for p in ps})))


def familiar_name(rng: random.Random, real: list[Entry], pieces: synthetic.NamePieces) -> tuple[str, str]:
    """An invented name that looks real: recombined pieces, or a real name slightly changed."""
    if rng.random() < 0.5:
        return synthetic.recombined_name(rng, pieces)
    e = rng.choice(real)
    return synthetic.near_name(rng, e.name, pieces.words), e.kind


def invented_entries(rng: random.Random, n: int, known: set[str], real: list[Entry] = (),
                     familiar: float = 0.0, familiar_signatures: float = 0.0) -> list[Entry]:
    """n invented names with invented signatures; about 1 in 6 has none (the tool then errs).
    A share `familiar` is built from the real entries' pieces (familiar_name), never equal to a
    name in `known`; of those, a share `familiar_signatures` gets real parameters
    (synthetic.familiar_signature)."""
    pieces = name_pieces(real) if real else None
    out: dict[str, Entry] = {}
    while len(out) < n:
        looks_real = bool(pieces) and rng.random() < familiar
        name, kind = familiar_name(rng, real, pieces) if looks_real else synthetic.invented_name(rng)
        if name in known or name in out:
            continue
        sig = (synthetic.signature_for(rng, name, looks_real, pieces, familiar_signatures)
               if rng.random() < 0.85 else "")
        out[name] = Entry(name, kind, "", sig)
    return list(out.values())


def invented_tool_samples(rng: random.Random, invented: list[Entry], pool: list[Entry]) -> list[Sample]:
    """Tool chats on invented names; those without a signature are unknown to the tool."""
    table = {e.name: e for e in invented if e.signature}
    return [tool_sample(rng, e, pool, table) for e in invented]


def full_text(s: Sample) -> str:
    text = s.prompt + s.completion
    if s.kind == "tool":
        text += s.tool_result + ASSISTANT_PROMPT + s.final
    return text


def short_text(s: Sample) -> str:
    """The chat without system/developer messages and earlier exchanges: the last question and
    everything after it. Dense in copying; the curriculum's first phase trains on these."""
    return full_text(s)[s.prompt.rindex(START + "user"):]


def make_samples(rng: random.Random, entries: list[Entry], table: dict[str, Entry],
                 per_entry: int) -> list[Sample]:
    """per_entry doc chats per name, and as many tool chats for names with a signature."""
    out = []
    for e in entries:
        for _ in range(per_entry):
            out.append(doc_sample(rng, e, entries))
            if e.signature:
                out.append(tool_sample(rng, e, entries, table))
    rng.shuffle(out)
    return out


def split_names(entries: list[Entry], seed: int, heldout_fraction: float) -> tuple[list, list]:
    order = list(entries)
    random.Random(seed).shuffle(order)
    n_held = int(len(order) * heldout_fraction)
    return sorted(order[n_held:], key=lambda e: e.name), sorted(order[:n_held], key=lambda e: e.name)


HELDOUT_OOD = 80          # held-out chats, fixed whatever the training mix: out of domain,
HELDOUT_INVENTED = 200    # and tool chats on invented names (perplexity only)


def build(out: Path, seed: int, per_entry: int, heldout_fraction: float, invented: int,
          ood: int, code_fraction: float, copies: int, familiar: float,
          familiar_signatures: float = 0.0) -> dict:
    entries = harvest()
    table = {e.name: e for e in entries}
    train_e, held_e = split_names(entries, seed, heldout_fraction)
    pieces = name_pieces(train_e)              # held-out names lend no pieces
    rng = random.Random(seed + 1)
    # The held-out chats draw from their own stream, so they stay the same prompts when the
    # training mix (counts, generators) changes: runs of different recipes compare on one set.
    held_rng = random.Random(seed + 2)
    held = make_samples(held_rng, held_e, table, 1)
    held_fake = invented_entries(held_rng, HELDOUT_INVENTED, set(table))
    held_extra = invented_tool_samples(held_rng, held_fake, train_e) \
        + [ood_sample(held_rng, True, train_e) for _ in range(HELDOUT_OOD)]
    train = make_samples(rng, train_e, table, per_entry)
    fake = invented_entries(rng, invented, set(table) | {e.name for e in held_fake}, train_e, familiar,
                            familiar_signatures)
    train_extra = invented_tool_samples(rng, fake, train_e) \
        + [ood_sample(rng, False, train_e) for _ in range(ood)] \
        + [copy_sample(rng, train_e, pieces, familiar, familiar_signatures) for _ in range(copies)]
    code = source_chunks()
    rng.shuffle(code)
    n_code_held = max(1, len(code) // 20)
    n_code_train = int((len(code) - n_code_held) * code_fraction)
    docs_train = [full_text(s) for s in train + train_extra] + code[n_code_held:n_code_held + n_code_train]
    docs_held = [full_text(s) for s in held + held_extra] + code[:n_code_held]
    rng.shuffle(docs_train)
    docs_short = [short_text(s) for s in train + train_extra]
    rng.shuffle(docs_short)
    doc_drill = [short_text(s) for s in train if s.kind == "doc"]
    rng.shuffle(doc_drill)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text(ENDOFTEXT.join(docs_train) + ENDOFTEXT, encoding="utf-8")
    (out / "train_short.txt").write_text(ENDOFTEXT.join(docs_short) + ENDOFTEXT, encoding="utf-8")
    (out / "train_docs.txt").write_text(ENDOFTEXT.join(doc_drill) + ENDOFTEXT, encoding="utf-8")
    (out / "heldout.txt").write_text(ENDOFTEXT.join(docs_held) + ENDOFTEXT, encoding="utf-8")
    with open(out / "prompts.jsonl", "w", encoding="utf-8") as f:   # evaluation prompts (train)
        for s in train:
            f.write(json.dumps(dataclasses.asdict(s)) + "\n")
    with open(out / "heldout_prompts.jsonl", "w", encoding="utf-8") as f:   # never trained on
        for s in held + held_extra:
            if s.kind != "doc" and s.name not in {e.name for e in held_fake}:
                f.write(json.dumps(dataclasses.asdict(s)) + "\n")
    with open(out / "entries.jsonl", "w", encoding="utf-8") as f:   # the tool's table
        for e in entries:
            f.write(json.dumps(dataclasses.asdict(e)) + "\n")
    stats = {"python": sys.version.split()[0], "seed": seed, "names": len(entries),
             "train_names": len(train_e), "heldout_names": len(held_e),
             "train_chats": len(train), "heldout_chats": len(held),
             "tool_chats": sum(s.kind == "tool" for s in train), "invented_tool_chats": invented,
             "ood_chats": ood, "copy_chats": copies, "familiar_share": familiar,
             "familiar_signature_share": familiar_signatures,
             "code_chunks": len(code), "code_chunks_train": n_code_train,
             "train_chars": sum(map(len, docs_train)), "heldout_chars": sum(map(len, docs_held))}
    (out / "data_stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-entry", type=int, default=3, help="chats per name and kind (train)")
    p.add_argument("--heldout-fraction", type=float, default=0.05)
    p.add_argument("--invented", type=int, default=4000, help="tool chats on invented names")
    p.add_argument("--ood", type=int, default=1500, help="out-of-domain chats")
    p.add_argument("--copies", type=int, default=6000, help='"repeat exactly" chats on invented text')
    p.add_argument("--code-fraction", type=float, default=0.15, help="share of source chunks kept")
    p.add_argument("--familiar", type=float, default=0.5,
                   help="share of the invented names (tool and copy chats) built from real pieces")
    p.add_argument("--familiar-signatures", type=float, default=0.0,
                   help="share of the familiar names' signatures built from real parameters")
    a = p.parse_args(argv)
    print(json.dumps(build(a.out, a.seed, a.per_entry, a.heldout_fraction, a.invented, a.ood,
                           a.code_fraction, a.copies, a.familiar, a.familiar_signatures), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
