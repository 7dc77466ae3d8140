"""Which tokens of a training document the loss covers.

A chat is supervised where the assistant speaks: every token of the assistant messages after the
last user message (analysis, the tool call, the final answer, each with its header, since the model
writes those itself), and the content and end token of earlier assistant answers. System, developer
and user messages and tool results are context only: their tokens are not predicted, so the loss
is spent on answering, copying the asked-about name and the tool's result. Any other document
(source code) is supervised everywhere.

The tokenizer matches the harmony special tokens before BPE, so tokenizing the pieces between them
one by one gives exactly the ids of tokenizing the whole document.
"""
from __future__ import annotations

import re

import numpy as np

from harmony_text import END, MESSAGE, SPECIAL_TOKENS, START

_SPECIAL = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def supervised_pieces(doc: str) -> list[tuple[str, bool]]:
    """The document cut at special tokens, each piece with whether the loss covers it."""
    pieces = [p for p in _SPECIAL.split(doc) if p]
    if not doc.startswith(START):
        return [(p, True) for p in pieces]
    starts = [i for i, p in enumerate(pieces) if p == START]
    users = [i for i in starts if i + 1 < len(pieces) and pieces[i + 1].startswith("user")]
    last_user_end = pieces.index(END, users[-1]) if users else -1
    out: list[tuple[str, bool]] = []
    role, in_body = "", False
    for i, p in enumerate(pieces):
        if p == START:
            role = pieces[i + 1] if i + 1 < len(pieces) else ""
            in_body = False
        assistant = role.startswith("assistant")
        if i > last_user_end:
            out.append((p, assistant))
        else:
            out.append((p, assistant and in_body))
        if p == MESSAGE:
            in_body = True
    return out


def encode_documents(tok, docs: list[str], sep_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids (int32), document start offsets and a loss mask (bool) for the documents,
    each followed by sep_id (not supervised)."""
    split = [supervised_pieces(d) for d in docs]
    flat = [p for pieces in split for p, _ in pieces]
    encoded = iter(tok.encode_batch(flat))
    ids: list[int] = []
    mask: list[bool] = []
    starts: list[int] = []
    for pieces in split:
        starts.append(len(ids))
        for _, sup in pieces:
            piece_ids = next(encoded).ids
            ids.extend(piece_ids)
            mask.extend([sup] * len(piece_ids))
        ids.append(sep_id)
        mask.append(False)
    return (np.asarray(ids, dtype=np.int32), np.asarray(starts, dtype=np.int64),
            np.asarray(mask, dtype=bool))
