"""Invented identifiers and out-of-domain questions for the tiny model's training data.

Invented names (`vorpal.Tabrik.mune_sol`) cannot be memorized: the only way to predict them in
the analysis, the tool call and the final answer is to copy them from the user's question or the
tool's result. They teach the copying that held-out standard-library names need.
Familiar names (`sqlite3.complete_result`, `socket.recv_fd`) are invented too, but from real
pieces: a real module, real class names, words of real function names, or a real name with its
last component changed. A model that completes a name from memory instead of copying it gets
these wrong, as it gets held-out names wrong ("calendar.isleap" -> "calendar.isleapap").
Out-of-domain questions (greetings, arithmetic, general knowledge) get one short, honest answer
that says what the model can do. Train and held-out questions use disjoint fillers.
Pure functions of a `random.Random`; standard library only.
"""
from __future__ import annotations

import dataclasses
import random

ONSETS = ("b c d f g h j k l m n p r s t v w z br ch cl dr fl gr kr pl pr qu sh sk sp st th tr "
          "vl zh").split()
VOWELS = "a e i o u a e i o ai ea ou y".split()
CODAS = ("", "", "", "n", "r", "s", "t", "x", "l", "m", "k", "nd", "rt", "sh", "ng")
PARAMS = ("x y n s obj value name path data key default size start stop step timeout mode "
          "encoding flags item items func callback args kwargs prefix suffix sep fmt level "
          "count index text buffer stream").split()

OOD_ANSWER = ("I can only answer questions about Python's standard library: what a function, "
              "class or method does, and its signature.")

_GREETINGS = ("Hello!", "Hi there.", "Hey, how are you?", "Good morning!", "Who are you?",
              "What can you do?", "Hello, who are you?", "Thanks!", "Good evening.",
              "Are you a robot?", "What is your name?", "Nice to meet you.", "Good night!",
              "Hey!", "How are you today?", "Can you help me?", "Goodbye!", "Thank you very much.",
              "How old are you?", "Where do you live?", "Do you have feelings?")
_HELD_GREETINGS = ("Hi!", "Hello, how is it going?", "Good afternoon.", "Who made you?",
                   "Greetings!", "What is your purpose?")
_TOPICS = ("France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Egypt", "Peru", "India",
           "Spain", "Chile", "Ghana", "Poland", "Vietnam", "Mexico", "Italy")
_HELD_TOPICS = ("Germany", "Australia", "Morocco", "Sweden")
_THINGS = ("the sea", "autumn", "a cat", "the moon", "coffee", "rain", "a river", "winter",
           "mountains", "the city", "a dog", "friendship")
_HELD_THINGS = ("the stars", "a garden", "summer", "trains")
_GENERAL = ("What is the capital of {t}?", "Tell me about the history of {t}.",
            "What language do people speak in {t}?", "Write a poem about {s}.",
            "Write a short story about {s}.", "What is the weather like today?",
            "Tell me a joke.", "Who won the football world cup in {y}?", "How do I bake bread?",
            "What is the meaning of life?", "Recommend a good movie.", "How tall is Mount Everest?",
            "What should I cook for dinner?", "Translate 'good night' into {t}'s language.",
            "What is the currency of {t}?", "Plan a trip to {t}.", "Describe {s}.",
            "Explain {s}.", "What is {s} for?", "Why is the sky blue?", "What time is it?",
            "Tell me a fun fact about {t}.", "Give me advice about {s}.",
            "What is the best season to visit {t}?", "Can you draw {s}?",
            "How do I fix my bicycle?", "Write an email to my boss.", "What is {s} like in {t}?")
_HELD_GENERAL = ("What is the population of {t}?", "Write a song about {s}.",
                 "Who painted the Mona Lisa?", "How far away is the sun?",
                 "What is the tallest building in {t}?", "Suggest a name for {s}.")
_ARITHMETIC = ("What is {a}+{b}?", "What is {a} + {b}?", "What is {a} times {b}?",
               "Compute {a} - {b}.", "What is {a} divided by {b}?", "How much is {a}*{b}?",
               "What is {a} minus {b}?", "Add {a} and {b}.", "Multiply {a} by {b}.",
               "Is {a} a prime number?", "What is {a} squared?")
_HELD_ARITHMETIC = ("What is {a} plus {b}?", "Calculate {a} x {b}.", "Subtract {b} from {a}.")


def word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                   for _ in range(syllables))


def invented_name(rng: random.Random) -> tuple[str, str]:
    """(dotted name, kind): module[.Class].function, all invented."""
    parts = [word(rng, rng.randint(1, 3))]
    if rng.random() < 0.3:
        parts.append(word(rng, 1))
    kind = "function"
    if rng.random() < 0.35:
        parts.append(word(rng, rng.randint(1, 2)).capitalize())
        kind = "class"
    if kind == "function" or rng.random() < 0.6:
        parts.append("_".join(word(rng, rng.randint(1, 2)) for _ in range(rng.randint(1, 3))))
        kind = "method" if kind == "class" else "function"
    return ".".join(parts), kind


def invented_signature(rng: random.Random, name: str) -> str:
    names = rng.sample(PARAMS, rng.randint(0, 4))
    params = []
    for i, p in enumerate(names):
        if p == "args":
            params.append("*args")
        elif p == "kwargs":
            params.append("**kwargs")
        elif i and rng.random() < 0.4:
            params.append(f"{p}={rng.choice(('None', 'False', 'True', '0', '1', repr(''), '-1'))}")
        else:
            params.append(p)
    if params and rng.random() < 0.2:
        params.insert(rng.randint(0, len(params)), "/")
    return f"{name}({', '.join(params)})"


@dataclasses.dataclass(frozen=True)
class NamePieces:
    """Pieces of real dotted names: modules ("os.path"), class names ("Path"), the words of
    function and method names split at "_" ("recv", "fds")."""
    modules: tuple[str, ...]
    classes: tuple[str, ...]
    words: tuple[str, ...]
    param_lists: tuple[tuple[str, ...], ...] = ()   # real signatures' parameters, in order
    params: tuple[str, ...] = ()                    # every distinct parameter ("numlines=5")


def _new_attr(rng: random.Random, words: tuple[str, ...]) -> str:
    picked = [rng.choice(words) for _ in range(rng.choice((1, 2, 2, 3)))]
    return ("_" if rng.random() < 0.7 else "").join(picked)


def recombined_name(rng: random.Random, pieces: NamePieces) -> tuple[str, str]:
    """(dotted name, kind) from real pieces: module[.Class][.new_function_name]."""
    module = rng.choice(pieces.modules)
    if rng.random() < 0.35 and pieces.classes:
        cls = rng.choice(pieces.classes)
        if rng.random() < 0.3:
            return f"{module}.{cls}", "class"
        return f"{module}.{cls}.{_new_attr(rng, pieces.words)}", "method"
    return f"{module}.{_new_attr(rng, pieces.words)}", "function"


def near_name(rng: random.Random, real: str, words: tuple[str, ...]) -> str:
    """A real dotted name with its last component changed a little: a word swapped, dropped or
    added, or a trailing "s" added or removed ("socket.recv_fds" -> "socket.recv_fd"). A word
    swapped for itself gives the real name back: callers drop known names."""
    head, last = real.rsplit(".", 1)
    parts = last.split("_")
    r = rng.random()
    if r < 0.35 and len(parts) > 1:
        parts[rng.randrange(len(parts))] = rng.choice(words)
    elif r < 0.5 and len(parts) > 1:
        del parts[rng.randrange(len(parts))]
    elif r < 0.75:
        parts.insert(rng.randint(0, len(parts)), rng.choice(words))
    else:
        parts[-1] = parts[-1][:-1] if parts[-1].endswith("s") and len(parts[-1]) > 2 else parts[-1] + "s"
    return f"{head}.{'_'.join(p for p in parts if p)}"


def split_params(inside: str) -> tuple[str, ...]:
    """Parameters of a signature's text between its parentheses, split at the commas outside
    brackets and quotes: "a, b=(1, 2), *, c=','" -> ("a", "b=(1, 2)", "*", "c=','")."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in inside:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return tuple(out)


def familiar_signature(rng: random.Random, name: str, pieces: NamePieces) -> str:
    """A real signature's parameters on an invented name, one of them swapped for another real
    parameter of the same kind (with or without a default): long, realistic text to copy."""
    params = list(rng.choice(pieces.param_lists))
    slots = [i for i, p in enumerate(params) if p not in ("*", "/", "self", "cls")]
    if slots and rng.random() < 0.7:
        i = rng.choice(slots)
        same_kind = [p for p in pieces.params if ("=" in p) == ("=" in params[i])]
        params[i] = rng.choice(same_kind)
    return f"{name}({', '.join(params)})"


def signature_for(rng: random.Random, name: str, looks_real: bool, pieces: NamePieces | None,
                  familiar_signatures: float) -> str:
    """An invented signature for name: from real parameters (familiar_signature) for a share
    `familiar_signatures` of the familiar-looking names, invented_signature otherwise."""
    real_params = looks_real and familiar_signatures > 0 and rng.random() < familiar_signatures
    return familiar_signature(rng, name, pieces) if real_params else invented_signature(rng, name)


COPY_REQUESTS = ("Repeat exactly: {t}", "Say {t}", "Echo this: {t}", "Please repeat {t}")


def copy_text(rng: random.Random, pieces: NamePieces | None = None, familiar: float = 0.0,
              familiar_signatures: float = 0.0) -> str:
    """One to four invented names or signatures: text that can only be copied, never recalled.
    A share `familiar` of the names is built from real pieces (recombined_name); of their
    signatures, a share `familiar_signatures` from real parameters (familiar_signature)."""
    items = []
    for _ in range(rng.randint(1, 4)):
        looks_real = bool(pieces) and rng.random() < familiar
        name, _kind = recombined_name(rng, pieces) if looks_real else invented_name(rng)
        items.append(signature_for(rng, name, looks_real, pieces, familiar_signatures)
                     if rng.random() < 0.4 else name)
    return " ".join(items)


def ood_question(rng: random.Random, heldout: bool) -> str:
    """A question that is not about Python's standard library."""
    greet, topics, things, general, arith = (
        (_HELD_GREETINGS, _HELD_TOPICS, _HELD_THINGS, _HELD_GENERAL, _HELD_ARITHMETIC) if heldout
        else (_GREETINGS, _TOPICS, _THINGS, _GENERAL, _ARITHMETIC))
    r = rng.random()
    if r < 0.3:
        return rng.choice(greet)
    if r < 0.65:
        return rng.choice(arith).format(a=rng.randint(0, 999), b=rng.randint(1, 99))
    return rng.choice(general).format(t=rng.choice(topics), s=rng.choice(things),
                                      y=rng.choice(range(1950, 2024, 4)))
