"""Held-out perplexity and chat quality of the tiny model, measured with transformers (CPU, eager).

Perplexity: heldout.txt tokenized as one stream, cut into non-overlapping SEQ_LEN windows; exp of
the mean next-token NLL over every predicted token, and over the tokens the assistant writes (the
ones training puts in the loss, supervision.py; prompts and tool results are context only).
Quality: greedy chats on prompts sampled from the training chats (prompts.jsonl, "seen" names)
and on held-out prompts (heldout_prompts.jsonl: signature questions on names never trained on, and
out-of-domain questions from templates and fillers never trained on):
  * well-formed: the reply parses as harmony (harmony_text.parse_assistant_completion) and the
    conversation ends in a final message with <|return|>; for tool chats the tool is really run
    (data.lookup_signature) on the model's arguments and the model must then answer in final;
  * tool call: a tool-chat reply ends in a <|call|> to functions.lookup_signature whose arguments
    are a JSON object with a string "name"; name correct: exactly the name the user asked about;
  * doc first sentence: the final answer's first sentence equals the first sentence of the
    docstring's first paragraph (whitespace normalised);
  * answer states the signature: the final answer after the tool result contains the signature the
    tool returned, verbatim;
  * out of domain honest: no tool call, a final answer of at most 200 characters that mentions
    "standard library" and names no dotted identifier (so no invented API).

    python recipes/tiny_model/evaluate.py MODEL_DIR DATA_DIR [--mxfp4] [--prompts 100] [--json OUT]
MODEL_DIR holds config.json, model.safetensors and tokenizer.json (fp32 as trained, or the MXFP4
checkpoint `gptoss-edge quantize` writes, loaded with Mxfp4Config(dequantize=True) when --mxfp4).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import re
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

import harmony_text as ht
from data import Entry, lookup_signature
from supervision import encode_documents

SEQ_LEN = 512


def load_model(model_dir: Path, mxfp4: bool):
    """GptOssForCausalLM in fp32 with eager attention; MXFP4 experts dequantized on load."""
    from transformers import GptOssForCausalLM, Mxfp4Config
    kwargs = {"dtype": torch.float32, "attn_implementation": "eager"}
    if mxfp4:
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    model = GptOssForCausalLM.from_pretrained(model_dir, **kwargs)
    model.eval()
    return model


def load_tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))


def heldout_windows(tok: Tokenizer, text: str, seq_len: int = SEQ_LEN) -> torch.Tensor:
    """[n, seq_len] non-overlapping windows of the tokenized held-out text (tail dropped)."""
    ids = tok.encode(text).ids
    n = len(ids) // seq_len
    return torch.tensor(ids[:n * seq_len], dtype=torch.long).view(n, seq_len)


def heldout_mask(tok: Tokenizer, text: str, seq_len: int = SEQ_LEN) -> torch.Tensor:
    """[n, seq_len] bool: which tokens of heldout_windows the assistant writes."""
    docs = [d for d in text.split(ht.ENDOFTEXT) if d]
    ids, _, mask = encode_documents(tok, docs, tok.token_to_id(ht.ENDOFTEXT))
    n = len(ids) // seq_len
    if ids.tolist() != tok.encode(text).ids:
        raise ValueError("held-out text does not consist of whole documents")
    return torch.from_numpy(mask[:n * seq_len].copy()).view(n, seq_len)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch: int = 8, mask: torch.Tensor | None = None) -> float:
    """exp(mean NLL) over every predicted token, or over those where mask is true."""
    total, count = 0.0, 0
    keep_all = torch.ones_like(windows, dtype=torch.bool)
    for chunk, keep in zip(windows.split(batch), (keep_all if mask is None else mask).split(batch)):
        logits = model(input_ids=chunk).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="none")
        sel = keep[:, 1:].reshape(-1)
        total += nll[sel].sum().item()
        count += int(sel.sum())
    return math.exp(total / count)


@torch.no_grad()
def greedy(model, tok: Tokenizer, text: str, max_new_tokens: int) -> str:
    """Greedy continuation of text, stopped by <|return|> or <|call|> (included in the result)."""
    ids = torch.tensor([tok.encode(text).ids])
    stops = [tok.token_to_id(ht.RETURN), tok.token_to_id(ht.CALL)]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=stops, pad_token_id=tok.token_to_id(ht.ENDOFTEXT))
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=False)


@dataclasses.dataclass
class ChatResult:
    kind: str
    name: str
    well_formed: bool          # ends in a final message after a well-formed exchange
    call_ok: bool | None       # tool chats: a parseable call with valid JSON arguments
    call_name_correct: bool | None
    answer_exact: bool         # the final answer equals the training answer
    first_sentence_ok: bool = False    # doc chats: first sentence equals the docstring's
    states_signature: bool = False     # tool chats: the answer contains the returned signature
    ood_honest: bool = False           # out-of-domain chats: short, honest, no API named
    error: str = ""
    reply: str = ""


def first_sentence(text: str) -> str:
    """Whitespace-normalised text up to the first sentence end ('.', '!' or '?' then a space)."""
    text = " ".join(text.split())
    m = re.search(r"[.!?](\s|$)", text)
    return text[:m.start() + 1] if m else text


_DOTTED = re.compile(r"\b[A-Za-z_]\w*\.[A-Za-z_]\w*")


def is_honest_ood_answer(answer: str) -> bool:
    return len(answer) <= 200 and "standard library" in answer and not _DOTTED.search(answer)


def run_chat(model, tok: Tokenizer, sample: dict, table: dict[str, Entry],
             max_new_tokens: int = 160) -> ChatResult:
    reply = greedy(model, tok, sample["prompt"], max_new_tokens)
    is_tool = sample["kind"] == "tool"
    res = ChatResult(sample["kind"], sample["name"], False, False if is_tool else None,
                     False if is_tool else None, False, reply=reply)
    expected_final = sample["final"] if is_tool else sample["completion"]
    result: dict = {}
    try:
        msgs = ht.parse_assistant_completion(reply)
        if is_tool:
            call = msgs[-1]
            if call.terminal != ht.CALL or call.recipient != ht.TOOL_RECIPIENT:
                raise ht.HarmonyFormatError("no call to functions.lookup_signature")
            args = json.loads(call.content)
            if not isinstance(args, dict) or not isinstance(args.get("name"), str):
                raise ht.HarmonyFormatError(f"arguments {call.content!r} lack a string 'name'")
            res.call_ok = True
            res.call_name_correct = args["name"] == sample["name"]
            result = lookup_signature(args["name"], table)
            convo = sample["prompt"] + reply + ht.tool_result(result)
            final = greedy(model, tok, convo + ht.ASSISTANT_PROMPT, max_new_tokens)
            res.reply += " || " + final
            msgs = ht.parse_assistant_completion(final)
            reply = final
        res.well_formed = msgs[-1].channel == "final" and msgs[-1].terminal == ht.RETURN
        answer = msgs[-1].content
        res.answer_exact = res.well_formed and answer == expected_final.split(ht.MESSAGE)[-1].split(ht.RETURN)[0]
        if sample["kind"] == "doc":
            res.first_sentence_ok = res.well_formed and first_sentence(answer) == first_sentence(
                table[sample["name"]].summary)
        elif is_tool:
            res.states_signature = res.well_formed and "signature" in result \
                and result["signature"] in answer
        else:
            res.ood_honest = res.well_formed and len(msgs) <= 2 and is_honest_ood_answer(answer)
    except (ht.HarmonyFormatError, json.JSONDecodeError) as e:
        res.error = str(e)
    return res


def sample_prompts(data_dir: Path, n: int, seed: int, file: str = "prompts.jsonl") -> list[dict]:
    lines = (data_dir / file).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in random.Random(seed).sample(lines, min(n, len(lines)))]


def load_table(data_dir: Path) -> dict[str, Entry]:
    rows = (data_dir / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    return {e.name: e for e in (Entry(**json.loads(r)) for r in rows)}


def quality(model, tok: Tokenizer, samples: list[dict], table: dict[str, Entry],
            progress: bool = False) -> dict:
    results = []
    for i, s in enumerate(samples):
        results.append(run_chat(model, tok, s, table))
        if progress and (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(samples)} chats", file=sys.stderr, flush=True)
    return summarize(results)


def summarize(results: list[ChatResult]) -> dict:
    """Rates (percent) over the chats; per-kind rates only for kinds that occur."""
    tools = [r for r in results if r.kind == "tool"]
    docs = [r for r in results if r.kind == "doc"]
    ood = [r for r in results if r.kind == "ood"]
    rate = lambda xs: round(100.0 * sum(xs) / max(1, len(xs)), 1)  # noqa: E731
    out = {"prompts": len(results), "tool_prompts": len(tools),
           "well_formed_final_pct": rate([r.well_formed for r in results]),
           "tool_call_valid_json_pct": rate([bool(r.call_ok) for r in tools]),
           "tool_call_name_correct_pct": rate([bool(r.call_name_correct) for r in tools]),
           "answer_exact_pct": rate([r.answer_exact for r in results])}
    if tools:
        out["tool_answer_states_signature_pct"] = rate([r.states_signature for r in tools])
    if docs:
        out["doc_prompts"] = len(docs)
        out["doc_first_sentence_pct"] = rate([r.first_sentence_ok for r in docs])
    if ood:
        out["ood_prompts"] = len(ood)
        out["ood_honest_pct"] = rate([r.ood_honest for r in ood])
    out["failures"] = [dataclasses.asdict(r) for r in results if not r.well_formed
                       or (r.kind == "tool" and not r.call_ok)][:10]
    return out


def print_quality(label: str, q: dict) -> None:
    print(f"{label}: " + "; ".join(f"{k} {v}" for k, v in q.items() if k != "failures"), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--mxfp4", action="store_true", help="MXFP4 checkpoint: dequantize on load")
    p.add_argument("--prompts", type=int, default=100, help="chats on seen names")
    p.add_argument("--heldout-prompts", type=int, default=None,
                   help="at most this many signature chats on held-out names and as many "
                        "out-of-domain ones (default: all of heldout_prompts.jsonl)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)   # on a shared 2-core machine a second torch thread mostly spins
    model, tok = load_model(a.model, a.mxfp4), load_tokenizer(a.model)
    text = (a.data / "heldout.txt").read_text(encoding="utf-8")
    windows, mask = heldout_windows(tok, text), heldout_mask(tok, text)
    figures = {"model": str(a.model), "mxfp4": a.mxfp4,
               "heldout_tokens": int(windows.numel()), "heldout_ppl": round(perplexity(model, windows), 4),
               "heldout_assistant_tokens": int(mask[:, 1:].sum()),
               "heldout_assistant_ppl": round(perplexity(model, windows, mask=mask), 4)}
    print(f"held-out perplexity {figures['heldout_ppl']} over {figures['heldout_tokens']} tokens, "
          f"{figures['heldout_assistant_ppl']} over the {figures['heldout_assistant_tokens']} "
          f"the assistant writes", flush=True)
    if a.prompts:
        figures["quality"] = quality(model, tok, sample_prompts(a.data, a.prompts, a.seed),
                                     load_table(a.data), progress=True)
        print_quality("seen", figures["quality"])
    if a.prompts and a.heldout_prompts != 0:
        held = sample_prompts(a.data, 10**9, a.seed, "heldout_prompts.jsonl")
        chosen = [s for s in held if s["kind"] == "tool"][:a.heldout_prompts] \
            + [s for s in held if s["kind"] == "ood"][:a.heldout_prompts]
        figures["quality_heldout"] = quality(model, tok, chosen, load_table(a.data), progress=True)
        print_quality("held-out", figures["quality_heldout"])
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
