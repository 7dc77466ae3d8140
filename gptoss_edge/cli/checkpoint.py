"""CLI: `gptoss-edge make-checkpoint` (synthetic checkpoint in the real format) and
`gptoss-edge check-checkpoint` (open + validate a checkpoint of either layout)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from gptoss_edge.compiler.checkpoint import HF, ORIGINAL, CheckpointError, open_checkpoint
from gptoss_edge.compiler.config import PRESETS, ConfigError, ModelConfig, preset


def register(subparsers: argparse._SubParsersAction) -> None:
    make = subparsers.add_parser(
        "make-checkpoint", help="write a synthetic gpt-oss checkpoint with random weights",
        description="Write a checkpoint in the exact released format (safetensors, bf16 + MXFP4) "
                    "with seeded random weights; the same seed gives the same model in both layouts.")
    make.add_argument("out", type=Path, help="new directory to create")
    make.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    make.add_argument("--layers", type=int, default=None, help="number of layers (fewer: the first N; more: same alternation)")
    make.add_argument("--layout", default=HF, choices=[HF, ORIGINAL])
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(func=make_checkpoint)

    check = subparsers.add_parser(
        "check-checkpoint", help="validate a checkpoint (keys, shapes, dtypes, files)")
    check.add_argument("path", type=Path)
    check.set_defaults(func=check_checkpoint)


O200K_VOCAB = 201088   # gpt-oss vocabulary (o200k_harmony)


def make_checkpoint(args: argparse.Namespace) -> int:
    from gptoss_edge.compiler.synthetic import CheckpointExistsError, checkpoint_bytes, write_checkpoint
    try:
        cfg = preset(args.preset)
        if args.layers is not None:
            cfg = with_layer_count(cfg, args.layers)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar = ProgressBar(sys.stderr, checkpoint_bytes(cfg))
    start = time.monotonic()
    try:
        write_checkpoint(args.out, cfg, args.layout, args.seed, progress=bar.update)
    except CheckpointExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    if cfg.vocab_size < O200K_VOCAB:
        # A model too small for o200k gets its own small harmony-aware BPE, so `serve` and
        # `chat` work on it end to end (compile carries tokenizer.json into the engine).
        from gptoss_edge.runtime.tokens.tokenizer import write_tiny_tokenizer
        write_tiny_tokenizer(args.out, cfg.vocab_size)
    elapsed = time.monotonic() - start
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    files = sum(1 for p in args.out.rglob("*.safetensors"))
    print(f"wrote {args.out}: {args.preset} {cfg.num_hidden_layers} layers, {args.layout} layout, "
          f"seed {args.seed}, {_gb(size)} in {files} safetensors file(s), {elapsed:.1f} s "
          f"({size / max(elapsed, 1e-9) / 1e6:.0f} MB/s)", file=sys.stderr)
    return 0


def with_layer_count(cfg: ModelConfig, n: int) -> ModelConfig:
    """cfg with n layers: the first n, or more with the default sliding/full alternation."""
    if n < 1:
        raise ConfigError(f"--layers: must be a positive integer, got {n}")
    if n <= cfg.num_hidden_layers:
        return cfg.with_layers(n)
    return dataclasses.replace(cfg, num_hidden_layers=n, layer_types=())


def check_checkpoint(args: argparse.Namespace) -> int:
    try:
        ckpt = open_checkpoint(args.path)
        ckpt.validate()
    except (CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = ckpt.config
    print(f"{args.path}: valid {ckpt.layout} checkpoint, {c.num_hidden_layers} layers, "
          f"{c.num_local_experts} experts (top-{c.num_experts_per_tok}), hidden {c.hidden_size}, "
          f"vocab {c.vocab_size}, {len(ckpt.stored_keys())} tensors")
    return 0


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


class ProgressBar:
    """A one-line progress bar on a terminal (redrawn at most 10 times a second); silent when
    the stream is not a terminal."""

    def __init__(self, stream, total: int):
        self.stream, self.total = stream, max(total, 1)
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done: int, total: int, name: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        frac = done / max(total, 1)
        rate = done / max(now - self.start, 1e-9) / 1e6
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r[{bar:<30}] {frac:6.1%} {_gb(done)}/{_gb(total)} {rate:5.0f} MB/s "
                          f"{name[:48]:<48}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
