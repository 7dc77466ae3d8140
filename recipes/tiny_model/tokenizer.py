"""A small byte-level BPE for the tiny default model, trained with `tokenizers` on train.txt.

The harmony special tokens get the first ids, in this order, each a single token:
    0 <|start|>  1 <|end|>  2 <|message|>  3 <|channel|>  4 <|constrain|>  5 <|return|>
    6 <|call|>   7 <|endoftext|>
They are removed from the training text (so no merge ever spans one) and matched before BPE at
encode time. Byte-level: every string round-trips exactly.

Pre-tokenization is GPT-2's (a word takes the space before it), except that the space before a
dotted name stays a token of its own: "of json.dumps" -> " of", " ", "json", ".", "dumps". So a
name is the same tokens after a space (the question, the analysis) and after a quote (the JSON
arguments `{"name": "json.dumps"}`), and the tool call copies it token for token. With GPT-2's
rule alone the call had to respell the first component (" json" -> "json"): 10 of the previous
model's 18 miscopied held-out names (of 60) had the right module in the analysis and a wrong one
in the call ("bisect.bisect" -> "statistics.bisect").

    python recipes/tiny_model/tokenizer.py DATA_DIR OUT_DIR [--vocab-size 3072]
reads DATA_DIR/train.txt, writes OUT_DIR/tokenizer.json and OUT_DIR/tokenizer_config.json.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from harmony_text import SPECIAL_TOKENS

_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def text_pieces(text: str, piece_chars: int = 1 << 16):
    """The training text with the special tokens cut out, in bounded pieces."""
    for part in _SPLIT.split(text):
        for i in range(0, len(part), piece_chars):
            if part[i:i + piece_chars]:
                yield part[i:i + piece_chars]


SPACE_BEFORE_DOTTED_NAME = r" (?=[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_])"


def pre_tokenizer():
    """GPT-2 byte-level pre-tokenization with the space before a dotted name split off."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPACE_BEFORE_DOTTED_NAME), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def train_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text_pieces(text), trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"special token {t} got id {tok.token_to_id(t)}, expected {i}")
    return tok


def tokenizer_config() -> dict:
    """tokenizer_config.json so transformers' AutoTokenizer finds the special tokens."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 131072,
            "eos_token": "<|return|>", "pad_token": "<|endoftext|>",
            "additional_special_tokens": [t for t in SPECIAL_TOKENS
                                          if t not in ("<|return|>", "<|endoftext|>")]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--vocab-size", type=int, default=3072)
    a = p.parse_args(argv)
    tok = train_tokenizer((a.data / "train.txt").read_text(encoding="utf-8"), a.vocab_size)
    a.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(a.out / "tokenizer.json"))
    (a.out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=1))
    held = (a.data / "heldout.txt").read_text(encoding="utf-8")
    n = len(tok.encode(held).ids)
    print(f"vocab {tok.get_vocab_size()}; heldout {len(held)} chars -> {n} tokens "
          f"({len(held) / n:.2f} chars/token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
