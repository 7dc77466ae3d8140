"""Tokenizers: o200k_harmony offline with hash check, HF byte-level BPE, the tiny BPE, and the
incremental decoder that never splits a character."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from harmony_fixtures import harmony_encoding, o200k, tiny  # noqa: F401  (pytest fixtures)

from gptoss_edge.runtime.tokens.tokenizer import (HARMONY_SPECIALS, IncrementalDecoder, TokenizerError,
                                           load_tokenizer, make_tiny_tokenizer)
from gptoss_edge.runtime.tokens.o200k import (O200K_SHA256, packaged_vocab_path,
                                                 read_verified_vocab)

TEXTS = [
    "Hello, world! The quick brown fox.",
    "Grüße aus Köln — naïve café, 日本語のテキスト, 한국어, עברית, العربية",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇯🇵 math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ E⋅da = Q",
    "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment\n\n\ttab\r\n",
    "special names stay text: <|start|>user<|message|>hi<|end|> <|call|>",
    "",
]

DESIGN_IDS = {"<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008,
              "<|channel|>": 200005, "<|constrain|>": 200003, "<|return|>": 200002,
              "<|call|>": 200012}


def test_packaged_vocab_hash():
    data = read_verified_vocab(packaged_vocab_path())
    assert hashlib.sha256(data).hexdigest() == O200K_SHA256


def test_o200k_special_ids_match_design_and_openai_harmony(o200k, harmony_encoding):
    assert o200k.vocab_size == 201088
    for name, token_id in DESIGN_IDS.items():
        assert o200k.special_id(name) == token_id
    # openai-harmony names one more id (<|reserved_201088|>) beyond the models' 201088 ids.
    theirs = {name: harmony_encoding.encode(name, allowed_special="all")
              for name in harmony_encoding.special_tokens_set}
    theirs = {name: ids[0] for name, ids in theirs.items() if ids[0] < o200k.vocab_size}
    assert dict(o200k.special_tokens()) == theirs
    assert len(theirs) == 1090


@pytest.mark.parametrize("text", TEXTS)
def test_o200k_encode_matches_openai_harmony(o200k, harmony_encoding, text):
    ours = o200k.encode(text)
    assert ours == harmony_encoding.encode(text, disallowed_special=())
    assert not any(o200k.is_special(i) for i in ours)
    assert o200k.decode(ours) == text


def _refuses(tmp_path, content: bytes, gz: bool):
    path = tmp_path / ("vocab.tiktoken.gz" if gz else "vocab.tiktoken")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(TokenizerError, match="sha256") as err:
        load_tokenizer({"kind": "o200k_harmony", "file": path.name}, tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [True, False])
def test_o200k_refuses_tampered_vocab(tmp_path, gz):
    data = read_verified_vocab(packaged_vocab_path())
    first, rest = data.split(b"\n", 1)
    token, rank = first.split()
    swapped = token + b" " + str(int(rank) + 1).encode()   # one rank changed
    _refuses(tmp_path, swapped + b"\n" + rest, gz)
    _refuses(tmp_path, data + b"\n", gz)                    # one byte appended


def test_o200k_accepts_verified_copy_and_rejects_bad_files(tmp_path):
    (tmp_path / "o200k.tiktoken").write_bytes(read_verified_vocab(packaged_vocab_path()))
    tok = load_tokenizer({"kind": "o200k_harmony", "file": "o200k.tiktoken"}, tmp_path)
    assert tok.encode("hello world") == load_tokenizer({"kind": "o200k_harmony"}).encode("hello world")
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer({"kind": "o200k_harmony", "file": "missing.tiktoken"}, tmp_path)
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(TokenizerError, match="not valid gzip"):
        load_tokenizer({"kind": "o200k_harmony", "file": "bad.gz"}, tmp_path)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "sentencepiece"}, "kind"),
    ({"kind": "o200k_harmony", "path": "x"}, "unknown keys"),
    ({"kind": "hf"}, "needs 'file'"),
    ({"kind": "hf", "file": 3}, "'file' must be a string"),
    (["o200k_harmony"], "must be an object"),
])
def test_bad_specs(spec, message):
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(spec)


def _decode_streaming(tokenizer, ids):
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.feed(i) for i in ids]
    return pieces, decoder.flush()


@pytest.mark.parametrize("which", ["o200k", "tiny"])
def test_round_trip_and_incremental_decode(request, which):
    tok = request.getfixturevalue(which)
    split_chars = 0
    for text in TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        pieces, tail = _decode_streaming(tok, ids)
        assert "".join(pieces) + tail == text
        assert tail == ""
        assert all("\ufffd" not in p for p in pieces)       # never a broken character
        split_chars += sum(1 for i in ids if _is_partial_utf8(tok.token_bytes(i)))
    # The texts must really contain tokens that end inside a character, or the test proves nothing.
    assert split_chars > 0


def _is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_incremental_decoder_holds_and_flushes(o200k):
    ids = o200k.encode("𝔘")                   # a 4-byte character, several o200k tokens
    assert len(ids) > 1
    decoder = IncrementalDecoder(o200k)
    assert decoder.feed(ids[0]) == "" and decoder.pending
    assert decoder.feed(ids[1:]) == "𝔘" and not decoder.pending
    decoder.feed(ids[0])
    assert decoder.flush() == "\ufffd"          # stream ended inside a character
    assert IncrementalDecoder(o200k).feed([o200k.special_id("<|start|>")]) == "<|start|>"


def test_tiny_tokenizer_is_deterministic_and_small(tiny):
    first, second = make_tiny_tokenizer(512), make_tiny_tokenizer(512)
    assert first.to_str() == second.to_str()
    # and across processes (hash seeds differ), as `make-checkpoint --preset tiny` needs
    code = ("import hashlib; from gptoss_edge.runtime.tokens.tokenizer import make_tiny_tokenizer; "
            "print(hashlib.sha256(make_tiny_tokenizer(512).to_str().encode()).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == hashlib.sha256(first.to_str().encode()).hexdigest()
    assert tiny.vocab_size <= 512
    assert set(HARMONY_SPECIALS) <= set(tiny.special_tokens())
    assert all(tiny.is_special(tiny.special_id(n)) for n in HARMONY_SPECIALS)
    assert tiny.encode("<|start|>") != [tiny.special_id("<|start|>")]   # text, not control
    assert len(tiny.encode("assistant")) <= 2   # the corpus taught it harmony words
    with pytest.raises(TokenizerError, match=">= 265"):
        make_tiny_tokenizer(100)


def test_ids_out_of_range(o200k, tiny):
    for tok in (o200k, tiny):
        with pytest.raises(TokenizerError, match="outside the vocabulary"):
            tok.decode([tok.vocab_size])
        with pytest.raises(TokenizerError, match="outside the vocabulary"):
            tok.token_bytes(-1)
        with pytest.raises(TokenizerError, match="no special token"):
            tok.special_id("<|nope|>")


def test_hf_loader_refusals(tmp_path):
    tok = make_tiny_tokenizer(300)
    doc = json.loads(tok.to_str())
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer({"kind": "hf", "file": "garbage.json"}, tmp_path)
    metaspace = dict(doc, decoder={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True})
    (tmp_path / "meta.json").write_text(json.dumps(metaspace))
    with pytest.raises(TokenizerError, match="byte-level"):
        load_tokenizer({"kind": "hf", "file": "meta.json"}, tmp_path)
    no_call = dict(doc, added_tokens=[t for t in doc["added_tokens"] if t["content"] != "<|call|>"])
    (tmp_path / "nocall.json").write_text(json.dumps(no_call))
    with pytest.raises(TokenizerError, match=r"<\|call\|>"):
        load_tokenizer({"kind": "hf", "file": "nocall.json"}, tmp_path)


def test_hf_path_equals_tiktoken_path_on_o200k(tmp_path, o200k):
    # The same o200k vocabulary as a Hugging Face tokenizer.json (converted by transformers'
    # TikTokenConverter, the way gpt-oss's own tokenizer.json is laid out) must give the same ids
    # and bytes through our HF loader as through tiktoken. ~15 s: the conversion derives 199998
    # merges.
    converter = pytest.importorskip("transformers.convert_slow_tokenizer").TikTokenConverter
    from gptoss_edge.runtime.tokens.o200k import O200K_PATTERN
    vocab = tmp_path / "o200k_base.tiktoken"
    vocab.write_bytes(read_verified_vocab(packaged_vocab_path()))
    names = [name for name, _ in sorted(o200k.special_tokens().items(), key=lambda kv: kv[1])]
    converter(vocab_file=str(vocab), pattern=O200K_PATTERN,
              extra_special_tokens=names).converted().save(str(tmp_path / "tokenizer.json"))
    hf = load_tokenizer({"kind": "hf", "file": "tokenizer.json"}, tmp_path)
    assert hf.vocab_size == o200k.vocab_size
    assert dict(hf.special_tokens()) == dict(o200k.special_tokens())
    rng = np.random.default_rng(0)
    alphabet = list("abc XYZ 019.,\n\t'\"") + ["é", "日本", "😀", "𝔘", "👋🏽", "'s", "'LL"]
    texts = TEXTS + ["".join(rng.choice(alphabet, size=rng.integers(0, 60))) for _ in range(500)]
    assert [hf.encode(t) for t in texts] == [o200k.encode(t) for t in texts]
    ids = rng.integers(0, o200k.vocab_size, 5000)
    assert [hf.token_bytes(i) for i in ids] == [o200k.token_bytes(i) for i in ids]
