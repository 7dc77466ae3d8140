"""The two oracles every engine is compared with (test support; nobody here wrote them).

  * Hugging Face transformers `GptOssForCausalLM`, eager attention, eager experts, fp32, CPU.
    MXFP4 experts are dequantized by transformers' own loader: `Mxfp4Config(dequantize=True)`
    (on CPU without the `kernels` package transformers 5.x dequantizes anyway; asking explicitly
    keeps the path fixed). `dtype=torch.float32` makes the loader dequantize straight to fp32
    (it dequantizes to the dtype of the parameter), so no bf16 step is involved. Decode runs
    through transformers' own KV cache (`DynamicCache`, whose sliding layers keep only the last
    window-1 keys): an independent KV-cached implementation, window ring semantics included.
  * OpenAI's `gpt_oss.torch.model.Transformer` reading the `original/` layout with its own
    `Checkpoint` reader. That code hard-codes bf16 parameters and defaults to CUDA; the minimal
    wrapper here loads it with device="cpu" (its MXFP4 dequantization and the copy into the bf16
    parameters are exact: the checkpoint's dense tensors ARE bf16 and every MXFP4 value
    e2m1 * 2^k fits bf16's 8-bit exponent and 8-bit significand; `check_bf16_exact` asserts the
    former), then `.float()` for fp32 arithmetic. It has no KV cache and no batch: its own
    `TokenGenerator` recomputes the whole sequence per step, so its decode logits at position i
    are those of a forward over tokens[:i+1]; causal attention makes ONE forward over all tokens
    give every row at once. Fed HF's greedy tokens (teacher forcing), its argmax at each decode
    row is the token its own greedy loop would pick from the same prefix; where those argmaxes
    all agree with HF's tokens, both oracles generate the same continuation.

Batches of different lengths are computed row by row: a row's logits do not depend on the other
rows, and the engines' batched results are compared with these per-row answers.

Row semantics everywhere: `OracleRun.logits[i]` = logits computed at position i after feeding
tokens[i] (row i predicts token i+1), the same as `gptoss-edge generate --dump-logits`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

# A prompt longer than 3x the 128-token window on two rows, and one row inside the window, so
# every batch has different lengths. 16 greedy decode steps follow each prompt.
PROMPT_LENGTHS = (457, 403, 29)
N_DECODE = 16


@dataclasses.dataclass(frozen=True)
class OracleRun:
    tokens: tuple[int, ...]   # prompt + greedy continuation (tokens[i+1] = argmax logits[i], i >= P-1)
    prompt_len: int
    logits: np.ndarray        # float32 [len(tokens), vocab]; row i = logits at position i

    @property
    def generated(self) -> tuple[int, ...]:
        return self.tokens[self.prompt_len:]

    @property
    def prompt_logits(self) -> np.ndarray:
        return self.logits[: self.prompt_len]

    @property
    def decode_logits(self) -> np.ndarray:
        return self.logits[self.prompt_len:]


def make_prompts(vocab_size: int, seed: int, lengths: Sequence[int] = PROMPT_LENGTHS) -> list[list[int]]:
    """Deterministic random token ids, one list per batch row."""
    rng = np.random.default_rng(1000 + seed)
    return [rng.integers(0, vocab_size, size=n).tolist() for n in lengths]


def original_dir(checkpoint: str | Path) -> Path:
    """The directory holding the OpenAI layout: CHECKPOINT/original/, or CHECKPOINT itself."""
    p = Path(checkpoint)
    return p / "original" if (p / "original" / "config.json").exists() else p


@dataclasses.dataclass(frozen=True)
class CheckpointPair:
    """One synthetic model (one seed) written in both released layouts."""
    hf: Path            # config.json + model.safetensors (Hugging Face keys)
    original: Path      # config.json + model.safetensors (OpenAI `original/` keys)
    seed: int

    def layout(self, name: str) -> Path:
        return {"hf": self.hf, "original": self.original}[name]


def write_tiny_checkpoint(out: Path, seed: int, preset_name: str = "tiny") -> CheckpointPair:
    """Write the synthetic checkpoint of `seed` in both layouts (the `ckpt` writer promises the
    same weights for both layouts of one seed; the oracle agreement test checks it)."""
    from gptoss_edge.compiler.config import preset
    from gptoss_edge.compiler.synthetic import write_checkpoint

    cfg = preset(preset_name)
    write_checkpoint(out / "hf", cfg, "hf", seed)
    write_checkpoint(out / "original", cfg, "original", seed)
    return CheckpointPair(hf=out / "hf", original=original_dir(out / "original"), seed=seed)


# ---- Hugging Face transformers -------------------------------------------------------------

def load_hf(checkpoint: str | Path):
    """GptOssForCausalLM in fp32 on CPU, eager attention and eager (per-expert loop) experts."""
    from transformers import GptOssForCausalLM, Mxfp4Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()     # the "MXFP4 on CPU will dequantize" notice is expected
    model = GptOssForCausalLM.from_pretrained(
        str(checkpoint), quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32,
        attn_implementation="eager", experts_implementation="eager")
    model.eval()
    for name, p in model.named_parameters():
        if p.dtype != torch.float32:
            raise AssertionError(f"HF oracle parameter {name} is {p.dtype}, expected float32")
    return model


# ---- the same model with an engine's deliberate rounding (oracle of a lossy mode) ---------------
#
# A lossy expert mode computes a DIFFERENT model on purpose. Its error against the exact oracles
# is measured (and only loosely bounded); whether the engine computes exactly that model is
# checked against the HF oracle with the same rounding applied, which is tight:
#   "int4-weights": expert weights re-rounded the way the int4 lowering states it
#                   (compiler/expert_formats.py): per block of 32 inputs, scale = max|w| / 7
#                   (float32), q = round-half-even(w / scale) clipped to [-8, 7]. ONNX Runtime's
#                   4-bit QMoE keeps float32 activations (accuracy_level 0).
# (int8 experts have exact weights; what ONNX Runtime's int8-activation GEMM does to the
# activations is not modelled here: a plain block-32 symmetric int8 rounding of both expert GEMM
# inputs explains ~80% of its error, not all of it. See tests/test_parity.py.)
#   "dense4bit-mxfp4" / "dense4bit-int4": q/k/v/o and lm_head weights as the TensorRT target's
#                   --dense 4bit Gemm4bit blocks hold them (compiler/dense4bit.py), decoded.
#   "dense8bit":    the same projections as --dense 8bit Gemm8bit blocks hold them (q8: q x d).
VARIANTS = ("exact", "int4-weights", "dense4bit-mxfp4", "dense4bit-int4", "dense8bit")


def int4_block_rounding(w: torch.Tensor) -> torch.Tensor:
    """w [E, N, K] (blocks of 32 along K) -> int4 symmetric round-to-nearest, dequantized."""
    wb = w.reshape(*w.shape[:-1], -1, 32)
    scale = wb.abs().amax(-1, keepdim=True) / 7.0
    q = torch.round(wb / torch.where(scale > 0, scale, torch.ones_like(scale))).clamp(-8, 7)
    return (q * scale).reshape(w.shape)


def dense_4bit_rounding(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """w [out, in] -> the values a Gemm4bit node holds (compiler/dense4bit.py, blocks of 32 along
    `in`; decoded by the reference kernels' decoders, themselves tested against bit-field loops)."""
    from gptoss_edge.compiler import dense4bit
    from gptoss_edge.compiler.reference_kernels import dequant_int4, dequant_mxfp4
    blocks, scales = dense4bit.QUANTIZERS[fmt](w.detach().float().numpy())
    decoded = dequant_mxfp4(blocks, scales) if fmt == "mxfp4" else dequant_int4(blocks, scales)
    return torch.from_numpy(decoded.astype(np.float32))


def dense_8bit_rounding(w: torch.Tensor) -> torch.Tensor:
    """w [out, in] -> the values a Gemm8bit node holds: q * d, decoded here in float64."""
    from gptoss_edge.compiler import dense4bit
    q, d = dense4bit.quantize_q8(w.detach().float().numpy())
    decoded = (q.astype(np.float64) * d.astype(np.float64)[..., None]).reshape(w.shape)
    return torch.from_numpy(decoded.astype(np.float32))


def load_hf_variant(checkpoint: str | Path, variant: str):
    """The HF oracle with a lossy mode's rounding applied to its own parameters: expert weights
    (HF stores them [E, K, N]: transposed here to round blocks along K) or dense projections."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown oracle variant {variant!r}; one of {VARIANTS}")
    model = load_hf(checkpoint)
    if variant == "int4-weights":
        with torch.no_grad():
            for layer in model.model.layers:
                for p in (layer.mlp.experts.gate_up_proj, layer.mlp.experts.down_proj):
                    p.copy_(int4_block_rounding(p.transpose(1, 2)).transpose(1, 2))
    if variant.startswith("dense"):
        fmt = variant.split("-", 1)[1] if "-" in variant else "q8"
        rounding = dense_8bit_rounding if fmt == "q8" else (lambda w: dense_4bit_rounding(w, fmt))
        with torch.no_grad():
            for layer in model.model.layers:
                a = layer.self_attn
                for proj in (a.q_proj, a.k_proj, a.v_proj, a.o_proj):
                    proj.weight.copy_(rounding(proj.weight))
            model.lm_head.weight.copy_(rounding(model.lm_head.weight))
    return model


@torch.inference_mode()
def hf_full_logits(model, tokens: Sequence[int]) -> np.ndarray:
    """One forward over the whole sequence, no cache: float32 [len(tokens), vocab]."""
    ids = torch.tensor([list(tokens)], dtype=torch.long)
    return model(input_ids=ids, use_cache=False).logits[0].float().numpy()


@torch.inference_mode()
def hf_greedy_run(model, prompt: Sequence[int], n_decode: int = N_DECODE) -> OracleRun:
    """Prefill the prompt (logits at every prompt position), then n_decode greedy steps through
    transformers' KV cache, one token per forward."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([list(prompt)], dtype=torch.long), cache=cache, use_cache=True)
    rows = [out.logits[0].float().numpy()]
    tokens = list(prompt)
    for _ in range(n_decode):
        nxt = int(np.argmax(rows[-1][-1]))
        tokens.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]], dtype=torch.long), cache=out.cache, use_cache=True)
        rows.append(out.logits[0].float().numpy())
    return OracleRun(tuple(tokens), len(prompt), np.concatenate(rows, axis=0))


@torch.inference_mode()
def hf_router_gaps(model, tokens: Sequence[int]) -> np.ndarray:
    """Per position: the smallest margin, over layers, between the k-th and (k+1)-th router
    logit. Where it is tiny, any rounding may swap an expert (a routing flip)."""
    gaps: list[np.ndarray] = []

    def hook(router, _inputs, out):
        top = torch.topk(out[0], router.top_k + 1, dim=-1).values
        gaps.append((top[:, -2] - top[:, -1]).float().numpy())
    handles = [layer.mlp.router.register_forward_hook(hook) for layer in model.model.layers]
    try:
        model(input_ids=torch.tensor([list(tokens)], dtype=torch.long), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return np.stack(gaps).min(axis=0)


# ---- OpenAI gpt_oss.torch ------------------------------------------------------------------

def check_bf16_exact(orig_dir: Path) -> None:
    """gpt_oss.torch stages every dense tensor through a bf16 parameter: lossless only if the
    checkpoint stores it as bf16 (as the released checkpoints do). Refuse anything else."""
    from safetensors import safe_open

    for f in sorted(orig_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                dtype = st.get_slice(key).get_dtype()
                if dtype not in ("BF16", "U8"):
                    raise AssertionError(f"{f.name}:{key} is {dtype}; gpt_oss.torch would round it "
                                         "to bf16, so it cannot serve as an exact oracle")


def load_openai(checkpoint: str | Path):
    """gpt_oss.torch Transformer from the original layout, on CPU, converted to fp32."""
    from gpt_oss.torch.model import Transformer

    path = original_dir(checkpoint)
    check_bf16_exact(path)
    model = Transformer.from_checkpoint(str(path), device="cpu")
    return model.float().eval()


@torch.inference_mode()
def openai_full_logits(model, tokens: Sequence[int]) -> np.ndarray:
    """Its forward takes one flat token sequence: float32 [len(tokens), vocab]."""
    return model(torch.tensor(list(tokens), dtype=torch.int32)).float().numpy()


# ---- comparisons -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Diff:
    max_abs: float        # max |a - b| over all compared logits
    scale: float          # max |b|: the logits' magnitude, for reading max_abs relatively
    argmax_agree: float   # fraction of rows whose argmax agrees
    worst_row: int

    def __str__(self) -> str:
        return (f"max|diff|={self.max_abs:.3g} (logit scale {self.scale:.3g}, "
                f"rel {self.max_abs / max(self.scale, 1e-30):.2g}), worst row {self.worst_row}, "
                f"argmax agree {100 * self.argmax_agree:.1f}%")


def diff(a: np.ndarray, b: np.ndarray) -> Diff:
    """Compare two [rows, vocab] logit arrays (b is the reference)."""
    if a.shape != b.shape:
        raise AssertionError(f"logit shapes differ: {a.shape} vs {b.shape}")
    err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    per_row = err.max(axis=1)
    return Diff(max_abs=float(per_row.max()), scale=float(np.abs(b).max()),
                argmax_agree=float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
                worst_row=int(per_row.argmax()))


def top1_margin(logits: np.ndarray) -> np.ndarray:
    """Per row: best logit minus the runner-up. Greedy choices are only comparable between
    two implementations where this margin exceeds twice their logit error."""
    part = np.partition(logits, -2, axis=-1)
    return part[..., -1] - part[..., -2]


# ---- the standard case: one batch, both oracles, computed once per session ---------------------

@dataclasses.dataclass(frozen=True)
class OracleCase:
    checkpoint: CheckpointPair
    runs: tuple[OracleRun, ...]            # HF: full prompt logits, then KV-cached greedy decode
    openai_logits: tuple[np.ndarray, ...]  # OpenAI over the same tokens, [len(tokens), vocab]

    @property
    def prompts(self) -> list[list[int]]:
        return [list(r.tokens[: r.prompt_len]) for r in self.runs]


def compute_oracle_case(ckpt: CheckpointPair, lengths: Sequence[int] = PROMPT_LENGTHS,
                        n_decode: int = N_DECODE) -> OracleCase:
    """Both oracles on the standard batch. HF reads the HF layout, OpenAI the original layout."""
    vocab = json.loads((ckpt.hf / "config.json").read_text())["vocab_size"]
    hf = load_hf(ckpt.hf)
    runs = tuple(hf_greedy_run(hf, p, n_decode) for p in make_prompts(vocab, ckpt.seed, lengths))
    del hf
    oa = load_openai(ckpt.original)
    openai = tuple(openai_full_logits(oa, r.tokens) for r in runs)
    return OracleCase(ckpt, runs, openai)
