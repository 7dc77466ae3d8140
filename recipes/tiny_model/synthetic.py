"""Invented identifiers and out-of-domain questions for the tiny model's training data.

Invented names (`vorpal.Tabrik.mune_sol`) cannot be memorized: the only way to predict them in
the analysis, the tool call and the final answer is to copy them from the user's question or the
tool's result. They teach the copying that held-out standard-library names need.
Out-of-domain questions (greetings, arithmetic, general knowledge) get one short, honest answer
that says what the model can do. Train and held-out questions use disjoint fillers.
Pure functions of a `random.Random`; standard library only.
"""
from __future__ import annotations

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
              "Are you a robot?", "What is your name?", "Nice to meet you.")
_HELD_GREETINGS = ("Hi!", "Hello, how is it going?", "Good afternoon.", "Who made you?")
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
            "What should I cook for dinner?", "Translate 'good night' into {t}'s language.")
_HELD_GENERAL = ("What is the population of {t}?", "Write a song about {s}.",
                 "Who painted the Mona Lisa?", "How far away is the sun?")
_ARITHMETIC = ("What is {a}+{b}?", "What is {a} + {b}?", "What is {a} times {b}?",
               "Compute {a} - {b}.", "What is {a} divided by {b}?", "How much is {a}*{b}?")
_HELD_ARITHMETIC = ("What is {a} plus {b}?", "Calculate {a} x {b}.")


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


COPY_REQUESTS = ("Repeat exactly: {t}", "Say {t}", "Echo this: {t}", "Please repeat {t}")


def copy_text(rng: random.Random) -> str:
    """One to four invented names or signatures: text that can only be copied, never recalled."""
    items = []
    for _ in range(rng.randint(1, 4)):
        name, _kind = invented_name(rng)
        items.append(invented_signature(rng, name) if rng.random() < 0.4 else name)
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
