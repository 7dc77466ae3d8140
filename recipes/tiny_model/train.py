"""Train the tiny default model: transformers' GptOssForCausalLM (fp32, eager) on CPU.

Exact gpt-oss architecture at a small size: alternating 128-token sliding / full attention with
learned sinks, YaRN RoPE as gpt-oss configures it (theta 150000, factor 32, original context
4096, beta_fast 32, beta_slow 1, no truncation), MoE with 8 experts top-2 and the clamped SwiGLU
(limit 7, alpha 1.702), biases on q/k/v/o, router and experts, untied lm_head.

Batches are windows of SEQ_LEN tokens that start at a document start of the tokenized train.txt,
so chats sit at position 0 like at inference and long ones cross the 128-token window. The loss
covers the tokens supervision.py selects (what the assistant writes; all of a source chunk).
Curriculum: the first SHORT_FRACTION of the steps draw their windows from train_short.txt (the
same chats from the last question on, ~4x more copying per token), the rest from train.txt.
Fixed seeds and a fixed step count: the same machine reproduces the same weights.

    python recipes/tiny_model/train.py DATA_DIR TOKENIZER_DIR OUT_DIR [--steps 400]
writes OUT_DIR (save_pretrained: config.json + model.safetensors, fp32) and OUT_DIR/train_log.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GptOssConfig, GptOssForCausalLM

import circuits
import qat
from supervision import encode_documents

MODEL_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                   num_local_experts=8, num_experts_per_tok=2)


def model_config(vocab_size: int, eos_id: int, pad_id: int) -> GptOssConfig:
    return GptOssConfig(
        vocab_size=vocab_size, **MODEL_SHAPE, sliding_window=128,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                     for i in range(MODEL_SHAPE["num_hidden_layers"])],
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                         "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                         "original_max_position_embeddings": 4096},
        max_position_embeddings=131072, rms_norm_eps=1e-5, swiglu_limit=7.0,
        tie_word_embeddings=False, attention_bias=True, router_aux_loss_coef=0.02,
        eos_token_id=eos_id, pad_token_id=pad_id, attn_implementation="eager")


def tokenize_corpus(path: Path, tok: Tokenizer, sep_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of a corpus file (int32), the offsets where documents start, the loss mask."""
    docs = path.read_text(encoding="utf-8").split("<|endoftext|>")
    return encode_documents(tok, [d for d in docs if d], sep_id)


def windows(ids: np.ndarray, starts: np.ndarray, picks: np.ndarray, seq_len: int,
            mask: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[len(picks), seq_len] token windows beginning at the chosen document starts, and their
    labels (-100 where the mask leaves a token out of the loss)."""
    valid = starts[starts + seq_len <= len(ids)]
    offs = [valid[p % len(valid)] for p in picks]
    x = torch.from_numpy(np.stack([ids[o:o + seq_len] for o in offs]).astype(np.int64))
    if mask is None:
        return x, x.clone()
    keep = torch.from_numpy(np.stack([mask[o:o + seq_len] for o in offs]))
    return x, torch.where(keep, x, torch.full_like(x, -100))


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def mean_loss(model, batch: tuple[torch.Tensor, torch.Tensor], chunk: int = 8) -> float:
    model.eval()
    losses = [model(input_ids=x, labels=y).loss.item()
              for x, y in zip(batch[0].split(chunk), batch[1].split(chunk))]
    model.train()
    return float(np.mean(losses))


def optimizer_step(model, opt, lr: float, x: torch.Tensor, y: torch.Tensor, **forward) -> float:
    """One AdamW step at learning rate lr on batch (x, labels y), gradients clipped to norm 1;
    returns the batch loss."""
    for g in opt.param_groups:
        g["lr"] = lr
    loss = model(input_ids=x, labels=y, **forward).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def copy_warmup(model, opt, rng: np.random.Generator, steps: int, peak_lr: float, vocab: int,
                batch: int = 32, length: int = 24) -> list[dict]:
    """Stage 0: random tokens repeated (circuits.copy_batch), so the induction circuit exists
    before the chats ask for it. Linear warm-up over 50 steps, then the peak rate."""
    history = []
    t0 = time.time()
    for step in range(steps):
        x, y = circuits.copy_batch(rng, batch, length, first_id=8, vocab=vocab)
        loss = optimizer_step(model, opt, peak_lr * min(1.0, (step + 1) / 50), x, y)
        if step % 25 == 0 or step == steps - 1:
            rec = {"copy_step": step, "copy_loss": round(loss, 4),
                   "elapsed_s": round(time.time() - t0, 1)}
            history.append(rec)
            print(json.dumps(rec), flush=True)
    return history


def train(data: Path, tok_dir: Path, out: Path, steps: int, batch: int, seq_len: int,
          peak_lr: float, seed: int, log_every: int = 25, eval_every: int = 200,
          save_every: int = 200, stop_after: int | None = None, keep_partials: bool = False,
          short_fraction: float = 0.5, copy_steps: int = 300, doc_every: int = 2,
          qat_steps: int = 400) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    sep = tok.token_to_id("<|endoftext|>")
    ids, starts, mask = tokenize_corpus(data / "train.txt", tok, sep)
    short = tokenize_corpus(data / "train_short.txt", tok, sep) if short_fraction > 0 else None
    drill = tokenize_corpus(data / "train_docs.txt", tok, sep) if doc_every else None
    short_steps = int(steps * short_fraction)
    held_ids, held_starts, held_mask = tokenize_corpus(data / "heldout.txt", tok, sep)
    held_batch = windows(held_ids, held_starts, np.arange(0, len(held_starts),
                                                          max(1, len(held_starts) // 32))[:32],
                         seq_len, held_mask)
    cfg = model_config(tok.get_vocab_size(), tok.token_to_id("<|return|>"), sep)
    model = GptOssForCausalLM(cfg)
    circuits.previous_token_head(model)
    circuits.unembedding_from_embedding(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters; {len(ids) / 1e6:.2f}M train tokens "
          f"({mask.mean():.0%} supervised) in "
          f"{len(starts)} documents; {steps} steps x {batch} x {seq_len}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak_lr, betas=(0.9, 0.95), eps=1e-8)
    log = {"params": n_params, "train_tokens": int(len(ids)), "supervised_tokens": int(mask.sum()), "steps": steps, "batch": batch,
           "seq_len": seq_len, "peak_lr": peak_lr, "seed": seed, "short_steps": short_steps,
           "copy_steps": copy_steps, "doc_every": doc_every, "qat_steps": qat_steps, "history": []}
    t_start = time.time()
    model.train()
    log["copy_history"] = copy_warmup(model, opt, rng, copy_steps, peak_lr, cfg.vocab_size)
    t0 = time.time()
    last = steps - 1 if stop_after is None else min(stop_after, steps - 1)
    qat_from = steps - qat_steps
    for step in range(last + 1):
        if qat_steps and step == qat_from:
            qat.start(model)          # the experts are seen through their MXFP4 values from here
        if doc_every and step % doc_every == doc_every - 1:
            corpus = drill
        else:
            corpus = short if step < short_steps else (ids, starts, mask)
        x, y = windows(corpus[0], corpus[1], rng.integers(0, 1 << 62, size=batch), seq_len, corpus[2])
        loss = optimizer_step(model, opt, lr_at(step, steps, peak_lr, warmup=50), x, y,
                              output_router_logits=True)
        if step % log_every == 0 or step == last:
            elapsed = time.time() - t0
            rec = {"step": step, "loss": round(loss, 4), "elapsed_s": round(elapsed, 1),
                   "tok_per_s": round((step + 1) * batch * seq_len / elapsed)}
            if step % eval_every == 0 or step == last:
                rec["heldout_loss"] = round(mean_loss(model, held_batch), 4)
            log["history"].append(rec)
            print(json.dumps(rec), flush=True)
        if save_every and step and step % save_every == 0 and step != last \
                and not (qat_steps and step >= qat_from):   # fallback if stopped (not mid-QAT)
            model.save_pretrained(out / (f"partial-{step}" if keep_partials else "partial"))
    if qat_steps and last >= qat_from:
        qat.finish(model)             # weights := their MXFP4 values (quantize stores them exactly)
    log["train_seconds"] = round(time.time() - t_start, 1)
    log["threads"] = torch.get_num_threads()
    log["stopped_after_step"] = last
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return log


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("tokenizer", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop once this step index is applied (the lr schedule still spans --steps);"
                        " gives the same weights as the run's partial/ save at that step")
    p.add_argument("--short-fraction", type=float, default=0.5,
                   help="share of the steps trained on train_short.txt first (curriculum)")
    p.add_argument("--copy-steps", type=int, default=300,
                   help="stage-0 steps on repeated random tokens (circuits.copy_batch) before the chats")
    p.add_argument("--doc-every", type=int, default=2,
                   help="every N-th step draws from train_docs.txt (the doc-chat drill); 0: never")
    p.add_argument("--qat-steps", type=int, default=400,
                   help="last N steps train the experts through their MXFP4 values (qat.py); 0: never")
    p.add_argument("--keep-partials", action="store_true",
                   help="save every 200 steps to OUT_DIR/partial-STEP (learning curves), not partial/")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core machine a second thread mostly spins)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    log = train(a.data, a.tokenizer, a.out, a.steps, a.batch, a.seq_len, a.lr, a.seed,
                stop_after=a.stop_after, keep_partials=a.keep_partials, short_fraction=a.short_fraction,
                copy_steps=a.copy_steps, doc_every=a.doc_every,
                qat_steps=a.qat_steps)
    print(f"trained {log['params'] / 1e6:.2f}M parameters in {log['train_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
