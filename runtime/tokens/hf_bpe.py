"""Hugging Face `tokenizer.json` tokenizers (byte-level BPE) and the tiny default tokenizer.

Byte-level BPE (GPT-2 style) writes every byte as one printable character (`byte_to_char`), so
each vocabulary entry maps back to exact bytes; that is what lets the incremental decoder hold
back a split multi-byte character. Added tokens (the harmony specials) stand for their names.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

from gptoss_edge.runtime.tokens.tokenizer import HARMONY_SPECIALS, Tokenizer, TokenizerError

TINY_SPECIALS = ("<|startoftext|>", "<|endoftext|>") + HARMONY_SPECIALS


@functools.lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """GPT-2 byte-level alphabet: printable Latin-1 bytes map to themselves, the other 68 bytes
    to U+0100.. in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


class HFTokenizer(Tokenizer):
    """A byte-level BPE `tokenizers.Tokenizer`; ids -> bytes via a table built at load."""

    def __init__(self, hf_tokenizer, spec: dict[str, Any], source: str):
        self._hf = hf_tokenizer
        self._hf.encode_special_tokens = True   # "<|start|>" in text stays text
        self.spec = spec
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        added = hf_tokenizer.get_added_tokens_decoder()    # id -> AddedToken
        self._specials = {tok.content: i for i, tok in added.items() if tok.special}
        missing = [name for name in HARMONY_SPECIALS if name not in self._specials]
        if missing:
            raise TokenizerError(f"{source}: tokenizer lacks the harmony special tokens {missing} "
                                 "(they must be added special tokens)")
        self._bytes = _token_byte_table(hf_tokenizer, added, self.vocab_size, source)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[self.check_id(token_id)]

    def special_tokens(self) -> Mapping[str, int]:
        return self._specials

    def to_json(self) -> str:
        return self._hf.to_str()


def _token_byte_table(hf_tokenizer, added, vocab_size: int, source: str) -> list[bytes]:
    char_to_byte = {c: b for b, c in byte_to_char().items()}
    table: list[bytes | None] = [None] * vocab_size
    for token, i in hf_tokenizer.get_vocab(with_added_tokens=False).items():
        try:
            table[i] = bytes(char_to_byte[c] for c in token)
        except KeyError:
            raise TokenizerError(f"{source}: vocabulary entry {token!r} (id {i}) is not byte-level "
                                 "BPE; only byte-level tokenizer.json files are supported") from None
    for i, tok in added.items():
        table[i] = tok.content.encode("utf-8")
    holes = [i for i, b in enumerate(table) if b is None]
    if holes:
        raise TokenizerError(f"{source}: ids {holes[:5]} have no vocabulary entry")
    return table


def load_hf_tokenizer(path: Path, spec: dict[str, Any] | None = None) -> HFTokenizer:
    """Load `tokenizer.json`; refuses files that are not byte-level BPE or lack harmony tokens."""
    from tokenizers import Tokenizer as RustTokenizer

    try:
        text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from None
    decoder = (doc.get("decoder") or {}).get("type") if isinstance(doc, dict) else None
    if decoder != "ByteLevel":
        raise TokenizerError(f"{path}: decoder is {decoder!r}; only byte-level BPE "
                             "(decoder type 'ByteLevel') tokenizer.json files are supported")
    try:
        hf = RustTokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise TokenizerError(f"{path}: not a valid tokenizer.json: {exc}") from None
    return HFTokenizer(hf, spec or {"kind": "hf", "file": str(path)}, str(path))


def make_tiny_tokenizer(vocab_size: int = 512):
    """Train a byte-level BPE with at most `vocab_size` ids on TINY_CORPUS. Deterministic (same
    corpus, same trainer settings, single pass). Ids: the TINY_SPECIALS first (0..8), then the
    256 byte symbols, then merges. Returns a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer as RustTokenizer, decoders, models, pre_tokenizers, trainers

    floor = len(TINY_SPECIALS) + 256
    if vocab_size < floor:
        raise TokenizerError(f"tiny tokenizer vocab_size must be >= {floor} "
                             f"(specials + 256 bytes), got {vocab_size}")
    tok = RustTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(TINY_SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS.splitlines(), trainer=trainer)
    return tok


# A small fixed text for the tiny tokenizer: harmony header words, English and Python, so the
# merges are useful for the embedded model's data and the result never depends on the machine.
TINY_CORPUS = """\
You are ChatGPT, a large language model trained by OpenAI.
Knowledge cutoff: 2024-06
Reasoning: low
Reasoning: medium
Reasoning: high
# Valid channels: analysis, commentary, final. Channel must be included for every message.
Calls to these tools must go to the commentary channel: 'functions'.
# Instructions
# Tools
## functions
namespace functions {
// Look up the signature of a Python function.
type lookup_signature = (_: {
// The dotted name of the function, e.g. os.path.join
name: string,
}) => any;
} // namespace functions
system developer user assistant analysis commentary final functions json
assistant to=functions.lookup_signature json
functions.lookup_signature to=assistant commentary
The user asks what the function does. The docstring says it returns the result.
What does os.path.join do?
It joins one or more path components intelligently and returns the combined path.
What does json.dumps do?
It serializes an object to a JSON formatted string.
Let me look up the signature first, then answer from the docstring.
The function takes a string and returns a list of strings.
def join(a, *p):
    \"\"\"Join two or more pathname components, inserting '/' as needed.\"\"\"
    return a
def split(self, sep=None, maxsplit=-1):
    \"\"\"Return a list of the words in the string, using sep as the delimiter.\"\"\"
    for item in self.items:
        if item is None:
            continue
        yield item
class Counter(dict):
    def __init__(self, iterable=None, /, **kwds):
        super().__init__()
        self.update(iterable, **kwds)
import os
import sys
from collections import OrderedDict
{"name": "os.path.join"}
{"name": "json.dumps", "module": "json"}
{"signature": "(obj, *, skipkeys=False, ensure_ascii=True, indent=None)"}
The quick brown fox jumps over the lazy dog. It is a sentence that uses every letter.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14
"""
