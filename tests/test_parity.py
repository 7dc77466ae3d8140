"""Engines against the oracles: every target / expert mode, both checkpoint layouts.

The standard case (tests/oracles.py): a batch of 3 prompts (457, 403, 29 tokens: two longer than
3x the 128-token window, one inside it), prefilled in ONE batched step with logits at every
position, then 16 batched KV-cached decode steps fed the oracle's greedy tokens (teacher forcing,
so a near-tie cannot make the sequences diverge). Row i of each result = logits at position i.

Each mode is checked twice:
  1. against the oracle of the SAME arithmetic (`Tolerance.variant`: the exact model for float
     experts; the HF model with the mode's deliberate rounding for int8/int4, see
     oracles.VARIANTS): tight, proves the engine computes what it claims;
  2. against the exact oracles (HF and OpenAI): the mode's own error, measured and bounded.
Adding a target or mode is one line in TARGETS. Tolerances are justified where they are defined;
every comparison prints its measured error (pytest -s shows them).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import oracles
from gptoss_edge import cli
from gptoss_edge.engine_dir import EngineDirError
from gptoss_edge.runtime.engine.backend import StepRow
from gptoss_edge.runtime.engine.opener import EngineLimits, open_engine

MAX_POSITIONS = 1024     # RoPE rows compiled into the tiny engines (> longest sequence, 473)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    variant: str                # the oracle of the same arithmetic (oracles.VARIANTS)
    variant_max: float | None   # max |engine - that oracle| over every position of every row
    variant_median: float       # median over the batch's positions of the per-position max |error|
    exact_median: float         # same median against the exact oracles: the mode's own error
    exact_max: float | None     # max against the exact oracles (None: not bounded, see
                                #   INT8_ACTIVATIONS)


# float experts: the MoE op on exactly dequantized weights, fp32 throughout. Against the exact
# oracles only the fp32 operation order differs (ORT's GQA kernel, fused MoE, MLAS GEMMs): the
# same kind of difference as between the two oracles themselves (tests/test_oracles.py: ~1e-5
# measured, 1e-4 asserted). Measured here <= 1.9e-5 on logits of magnitude ~9; bound 2e-4.
FLOAT = Tolerance("exact", 2e-4, 2e-4, 2e-4, 2e-4)

# int8 experts (only with `--activations int8`; the process-wide switch ORT_QMOE_CPU_QNBIT_GEMM
# that made them run fp32 is no longer used: --experts mxfp4 is the exact path): the weights are
# a lossless copy of MXFP4 (mxfp4.to_int8_blocks, tests/test_mxfp4.py), but ORT's CPU QMoE runs
# 8-bit experts through MLAS's int8-activation GEMM: the inputs of both expert GEMMs are
# quantized per block to int8 (relative step 1/127 of the block maximum). Measured against the
# exact model: median
# per-position error 0.15 over the batch on logits of magnitude ~9 (2%). Where the rounding
# pushes a router logit across a near-tie, that token takes another expert and its logits move
# by O(logit scale) (5-25% of a row's positions are off by > 0.5, max ~5.6; checked to sit at
# router near-ties by test_large_errors_of_statistical_modes_are_routing_flips): a max bound
# would only measure the luckiest tie, so the bounds are statistical: batch median 0.4 (2.7x
# measured, still well below a layout or scale bug, which moves every position by O(logit
# scale)), and >= 75% greedy agreement (measured 45-47 of 48).
INT8_ACTIVATIONS = Tolerance("exact", None, 0.4, 0.4, None)

# mxfp4 experts: the checkpoint's MXFP4 bytes kept, run by our MoeMxfp4 CPU kernel with float32
# activations. MXFP4 values are exact in fp32, so only the fp32 operation order differs from the
# exact model, as for FLOAT: same bounds.
MXFP4 = FLOAT

# The same mxfp4 engine with int8 activations (--activations int8: each expert GEMM input
# quantized per block of 32 to int8, scale amax/127, as llama.cpp's q8_0): the arithmetic of
# INT8_ACTIVATIONS above with our kernel instead of MLAS's, so the same statistical bounds and
# the same justification (routing flips at router near-ties, checked by
# test_large_errors_of_statistical_modes_are_routing_flips). Measured: docs/VERIFICATION.md.
MXFP4_INT8 = INT8_ACTIVATIONS

# int4 experts: weights re-rounded to 16 levels per block of 32, float32 activations. Against the
# HF model with the same rounded weights the engine is fp32-exact (measured 1.5e-5; bound 2e-4 as
# FLOAT). Against the exact model the rounding error of the weights (RMS ~9% per weight for
# MXFP4 codes re-rounded to 16 levels) changes this small random model a lot: measured batch
# median 2.3 on logits of magnitude ~9, argmax agreement ~40-50%. That is reported, not hidden;
# the bound (median 4) only guards against gross regressions. Exactness is proven by the variant check;
# the accuracy of int4 on real weights is a question for the real model's evals.
INT4 = Tolerance("int4-weights", 2e-4, 2e-4, 4.0, None)

# TensorRT-target graph with fp16 activations (residual stream, norms and logits stay fp32),
# evaluated by the numpy reference kernels: every projection input/output is rounded to fp16
# (relative 4.9e-4). Measured against the exact model: batch median 0.007 on logits of
# magnitude ~9; like int8 activations, a rounding that tips a router near-tie moves that
# token's logits by O(logit scale) (max ~3.4 measured), so the bounds are statistical:
# median 0.05 (7x measured) and >= 75% greedy agreement (measured 48/48).
FP16 = Tolerance("exact", None, 0.05, 0.05, None)

# 4-bit dense layers (q/k/v/o, lm_head as Gemm4bit; fp32 elsewhere): the TensorRT-target graph on
# the numpy kernels, and the ONNX Runtime engine on our CPU kernels (same Gemm4bit nodes).
# Against the HF model holding the same 4-bit weights (oracles.VARIANTS "dense4bit-*"): fp32-exact
# (measured 1.3e-5), bounds as FLOAT. Against the exact model: each projection's own error is
# ~0.1 relative (bounded per projection in tests/test_lower_trt.py), which this small random
# model amplifies through top-2 routing flips into a median per-position error of ~2.1-2.8 on
# logits of scale ~9.6 (measured). Like INT4 this is the mode's price on random weights,
# reported and bounded only against gross regressions (median 4.0); exactness is the variant check.
DENSE4_MXFP4 = Tolerance("dense4bit-mxfp4", 2e-4, 2e-4, 4.0, None)
DENSE4_INT4 = Tolerance("dense4bit-int4", 2e-4, 2e-4, 4.0, None)

# 8-bit dense layers (q/k/v/o, lm_head as Gemm8bit, llama.cpp's q8_0; ONNX Runtime engine on our
# CPU kernel, float32 activations): against the HF model holding the same q x d weights
# (oracles.VARIANTS "dense8bit") fp32-exact, bounds as FLOAT. Against the exact model each weight
# moves by at most 1/254 of its block's max (~16x less than 4-bit): measured median 0.11 on
# logits of scale ~9 (routing flips on this small random model, as for INT8_ACTIVATIONS; 48/48
# greedy choices agree); bound 1.0 only against gross regressions.
DENSE8 = Tolerance("dense8bit", 2e-4, 2e-4, 1.0, None)


@dataclasses.dataclass(frozen=True)
class Target:
    id: str
    compile_args: tuple[str, ...]            # arguments of `gptoss-edge compile` after -o OUT
    backend: str                             # runtime.engine.opener backend name (= generate --backend)
    tol: Tolerance

    def open_backend(self, engine_dir: Path, **limits: Any):
        return open_engine(engine_dir, EngineLimits(**limits), backend=self.backend, threads=1,
                           tokenizer=False).backend

    @property
    def generate_args(self) -> tuple[str, ...]:
        return ("--backend", self.backend)


ORT = ("--target", "onnxruntime", "--experts")
# The TensorRT graph run on CPU by the numpy kernels; its profile must hold the standard batch.
TRT = ("--target", "tensorrt", "--max-batch", "3", "--max-step-tokens", "512", "--precision")
TARGETS = [
    Target("ort-float", (*ORT, "float"), "onnxruntime", FLOAT),
    Target("ort-int8-int8act", (*ORT, "int8", "--activations", "int8"), "onnxruntime", INT8_ACTIVATIONS),
    Target("ort-mxfp4", (*ORT, "mxfp4"), "onnxruntime", MXFP4),
    Target("ort-mxfp4-int8act", (*ORT, "mxfp4", "--activations", "int8"), "onnxruntime", MXFP4_INT8),
    Target("ort-dense4-mxfp4", (*ORT, "mxfp4", "--dense", "4bit", "--dense-format", "mxfp4"), "onnxruntime",
           DENSE4_MXFP4),
    Target("ort-dense8", (*ORT, "mxfp4", "--dense", "8bit"), "onnxruntime", DENSE8),
    Target("ort-int4", (*ORT, "int4"), "onnxruntime", INT4),
    Target("trt-ref-fp32", (*TRT, "fp32"), "reference", FLOAT),
    Target("trt-ref-fp16", (*TRT, "fp16"), "reference", FP16),
    Target("trt-ref-dense4-mxfp4", (*TRT, "fp32", "--dense", "4bit", "--dense-format", "mxfp4"), "reference",
           DENSE4_MXFP4),
    Target("trt-ref-dense4-int4", (*TRT, "fp32", "--dense", "4bit", "--dense-format", "int4"), "reference",
           DENSE4_INT4),
]
LAYOUTS = ["hf", "original"]
# Read by ONNX Runtime's QMoE at session creation; no engine sets it (the backend leaves the
# process environment alone), and a shell that has it must not turn int8 activations off.
INHERITED_ORT_ENV = ("ORT_QMOE_CPU_QNBIT_GEMM",)


# ---- fixtures -----------------------------------------------------------------------------------

def compile_engine(checkpoint: Path, out: Path, target: Target) -> Path:
    argv = ["compile", str(checkpoint), "-o", str(out), *target.compile_args,
            "--max-positions", str(MAX_POSITIONS), "--no-progress"]
    assert cli.main(argv) == 0, f"gptoss-edge {' '.join(argv)} failed"
    return out


@pytest.fixture(scope="module")
def engines(tiny_checkpoint, tmp_path_factory) -> Callable[[Target, str], Path]:
    """Compiles each (target, layout) engine once, on first use."""
    built: dict[tuple[str, str], Path] = {}

    def get(target: Target, layout: str) -> Path:
        if (target.id, layout) not in built:
            out = tmp_path_factory.mktemp(f"{target.id}-{layout}") / "engine"
            built[target.id, layout] = compile_engine(tiny_checkpoint.layout(layout), out, target)
        return built[target.id, layout]
    return get


# A position whose router top-k choice is tied to within ROUTER_TIE in some layer of the oracle
# (k-th vs (k+1)-th router logit) may legitimately take another expert in any other fp32
# implementation: router-logit differences between two fp32 implementations are ~1e-6..1e-5
# (the logit differences above), so 1e-4 is 10x that. Such positions (measured: 0-1 of ~900;
# one at a margin of 2e-7 with seed 0) are left out of the tight max bounds, counted in the
# medians, and their number is bounded (<= 1% of a row, or 1).
ROUTER_TIE = 1e-4


@dataclasses.dataclass(frozen=True)
class VariantOracle:
    model: Any                        # HF model with the variant's rounding
    logits: tuple[np.ndarray, ...]    # over the standard case's tokens, per batch row
    tied: tuple[np.ndarray, ...]      # per row: bool [positions], router near-tie (ROUTER_TIE)


@pytest.fixture(scope="module")
def variant_oracle(tiny_checkpoint, oracle_case) -> Callable[[str], VariantOracle]:
    cache: dict[str, VariantOracle] = {}

    def get(variant: str) -> VariantOracle:
        if variant not in cache:
            model = oracles.load_hf_variant(tiny_checkpoint.hf, variant)
            runs = oracle_case.runs
            logits = (tuple(r.logits for r in runs) if variant == "exact" else
                      tuple(oracles.hf_full_logits(model, r.tokens) for r in runs))
            tied = tuple(oracles.hf_router_gaps(model, r.tokens) < ROUTER_TIE for r in runs)
            cache[variant] = VariantOracle(model, logits, tied)
        return cache[variant]
    return get


def _check_ties(tied: np.ndarray, label: str) -> np.ndarray:
    """Bounded count of router near-ties; returns the mask of positions held to max bounds."""
    print(f"{label}: {int(tied.sum())} router near-tie position(s) left out of max bounds")
    assert tied.sum() <= max(1, 0.01 * tied.size)
    return ~tied


def run_standard_case(backend, case: oracles.OracleCase) -> tuple[np.ndarray, ...]:
    """Batched prefill of all rows in one step, then batched teacher-forced decode steps."""
    slots = range(len(case.runs))
    prefill = backend.step([StepRow(slot, list(run.tokens[: run.prompt_len]), all_logits=True)
                            for slot, run in zip(slots, case.runs)])
    rows = [[p] for p in prefill]
    for k in range(min(len(r.generated) for r in case.runs)):
        out = backend.step([StepRow(slot, [run.generated[k]]) for slot, run in zip(slots, case.runs)])
        for acc, logits in zip(rows, out):
            acc.append(logits[None])
    return tuple(np.concatenate(r, axis=0) for r in rows)


@pytest.fixture(scope="module", params=[(t, layout) for t in TARGETS for layout in LAYOUTS],
                ids=lambda p: f"{p[0].id}-{p[1]}")
def engine_run(request, engines, oracle_case):
    target, layout = request.param
    with pytest.MonkeyPatch.context() as mp:
        for key in INHERITED_ORT_ENV:
            mp.delenv(key, raising=False)
        backend = target.open_backend(
            engines(target, layout), max_slots=len(oracle_case.runs),
            max_context=max(len(r.tokens) for r in oracle_case.runs) + 1,
            max_step_tokens=max(r.prompt_len for r in oracle_case.runs))
        try:
            return target, run_standard_case(backend, oracle_case)
        finally:
            backend.close()


# ---- logits -------------------------------------------------------------------------------------

def _parts(run: oracles.OracleRun):
    return {"prompt": slice(0, run.prompt_len), "decode": slice(run.prompt_len, len(run.tokens))}


def _row_errors(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(got.astype(np.float64) - ref).max(axis=1)


def test_logits_match_oracle_of_same_arithmetic(engine_run, oracle_case, variant_oracle):
    target, logits = engine_run
    tol = target.tol
    oracle = variant_oracle(tol.variant)
    pooled = []
    for row, (got, run, ref) in enumerate(zip(logits, oracle_case.runs, oracle.logits)):
        assert got.shape == ref.shape, f"row {row}: engine {got.shape}, oracle {ref.shape}"
        held = _check_ties(oracle.tied[row], f"{target.id} row {row}")
        for part, sl in _parts(run).items():
            err = _row_errors(got[sl], ref[sl])
            pooled.append(err)
            print(f"{target.id} row {row} {part} vs HF[{tol.variant}]: max {err.max():.3g} "
                  f"(without near-ties {err[held[sl]].max():.3g}) median {np.median(err):.3g}")
            # Bound: tol.variant_max, justified at the Tolerance definitions.
            if tol.variant_max is not None:
                assert err[held[sl]].max() < tol.variant_max
        if tol.variant == "exact" and tol.variant_max is not None:   # second, independent oracle
            err = _row_errors(got, oracle_case.openai_logits[row])
            print(f"{target.id} row {row} vs OpenAI: max {err[held].max():.3g} without near-ties")
            assert err[held].max() < tol.variant_max
    # Bound: tol.variant_median over all ~900 positions of the batch (a short row alone is a
    # noisy sample: one routing flip early in a 29-token row shifts its own median).
    median = float(np.median(np.concatenate(pooled)))
    print(f"{target.id} vs HF[{tol.variant}]: median over the batch {median:.3g}")
    assert median < tol.variant_median


def test_error_against_exact_oracles(engine_run, oracle_case, variant_oracle):
    """The mode's own error (zero for float up to rounding), against both exact oracles."""
    target, logits = engine_run
    tol = target.tol
    tied = variant_oracle("exact").tied
    for name in ("HF", "OpenAI"):
        pooled = []
        for row, (got, run, openai) in enumerate(zip(logits, oracle_case.runs, oracle_case.openai_logits)):
            ref = run.logits if name == "HF" else openai
            err = _row_errors(got, ref)
            pooled.append(err)
            print(f"{target.id} row {row} vs exact {name}: median {np.median(err):.3g} "
                  f"p90 {np.percentile(err, 90):.3g} max {err.max():.3g}, "
                  f"{100 * np.mean(err > 0.5):.1f}% positions off by > 0.5, argmax agree "
                  f"{100 * np.mean(got.argmax(1) == ref.argmax(1)):.1f}%")
            # Bound: tol.exact_max, justified at the Tolerance definitions.
            if tol.exact_max is not None:
                assert err[~tied[row]].max() < tol.exact_max
        # Bound: tol.exact_median over the whole batch (see test above).
        median = float(np.median(np.concatenate(pooled)))
        print(f"{target.id} vs exact {name}: median over the batch {median:.3g}")
        assert median < tol.exact_median


def test_large_errors_of_statistical_modes_are_routing_flips(engine_run, oracle_case, variant_oracle):
    """The justification of the statistical bounds (INT8_ACTIVATIONS, FP16), checked: the
    positions that miss the oracle by > 0.5 are those whose router top-k choice was nearly tied
    in some layer (their median margin is well below the typical one), not a systematic error.
    A statistical mode with no such position has no reason to go without a max bound: fail."""
    target, logits = engine_run
    if target.tol.variant_max is not None:
        pytest.skip("tight mode: every position is bounded")
    oracle = variant_oracle(target.tol.variant)
    far_gaps, all_gaps = [], []
    for got, run, ref in zip(logits, oracle_case.runs, oracle.logits):
        gaps = oracles.hf_router_gaps(oracle.model, run.tokens)
        far_gaps.append(gaps[_row_errors(got, ref) > 0.5])
        all_gaps.append(gaps)
    far, typical = np.concatenate(far_gaps), np.median(np.concatenate(all_gaps))
    print(f"{target.id}: {len(far)} positions off by > 0.5; their median router margin "
          f"{np.median(far) if len(far) else float('nan'):.3g} vs typical {typical:.3g}")
    assert len(far), f"{target.id}: no position is off by > 0.5; give it a max bound instead"
    assert np.median(far) < 0.5 * typical   # measured: int8 0.011 vs 0.075, fp16 0.0012 vs 0.075


def test_greedy_tokens_match_where_decided(engine_run, oracle_case, variant_oracle):
    """At every decode choice (rows P-1 .. end-1) the engine's argmax is the token the oracle of
    the same arithmetic picks, wherever that oracle's top-1 margin exceeds twice the allowed
    error (a closer call may legitimately go either way). Without a max bound
    (INT8_ACTIVATIONS, FP16): >= 75% of all choices agree (see INT8_ACTIVATIONS)."""
    target, logits = engine_run
    tol = target.tol
    oracle = variant_oracle(tol.variant)
    decided = agreed = total = 0
    for got, run, ref, tied in zip(logits, oracle_case.runs, oracle.logits, oracle.tied):
        rows = slice(run.prompt_len - 1, len(run.tokens) - 1)
        same = got[rows].argmax(1) == ref[rows].argmax(1)
        ok = ((oracles.top1_margin(ref[rows]) > 2 * tol.variant_max) & ~tied[rows]
              if tol.variant_max is not None else np.ones(len(same), bool))
        decided += int(ok.sum())
        agreed += int(same[ok].sum())
        total += len(same)
    print(f"{target.id}: {agreed}/{decided} compared greedy choices agree ({total} choices)")
    if tol.variant_max is None:
        assert agreed >= 0.75 * total
    else:   # the tight modes decide nearly all 48 choices
        assert agreed == decided and decided >= 0.75 * total


# ---- the generate CLI, tampering ----------------------------------------------------------------

@pytest.fixture(params=TARGETS, ids=lambda t: t.id)
def hf_engine(request, engines):
    return request.param, engines(request.param, "hf")


def test_generate_cli_dump_rows_are_positions(hf_engine, oracle_case, variant_oracle, tmp_path, capsys,
                                              monkeypatch):
    """`generate --dump-logits`: row i = logits at position i of prompt + generated (prefill in
    the CLI's default 256-token chunks, then one token per step, the last token's logits
    included). The engine's own greedy tokens are the oracle's picks on that same sequence."""
    target, engine = hf_engine
    for key in INHERITED_ORT_ENV:
        monkeypatch.delenv(key, raising=False)
    prompt = list(oracle_case.runs[0].tokens[: oracle_case.runs[0].prompt_len])
    n = 16
    dump = tmp_path / "logits.npy"
    rc = cli.main(["generate", str(engine), "--prompt-ids", ",".join(map(str, prompt)),
                   "--max-new-tokens", str(n), "--temperature", "0", "--dump-logits", str(dump),
                   "--ignore-eos", "--json", *target.generate_args])
    assert rc == 0
    tokens = json.loads(capsys.readouterr().out)["token_ids"]
    got = np.load(dump)
    model = variant_oracle(target.tol.variant).model
    ref = oracles.hf_full_logits(model, prompt + tokens)     # oracle on the engine's sequence
    assert len(tokens) == n and got.shape == ref.shape == (len(prompt) + n, ref.shape[1])
    err = _row_errors(got, ref)
    tol = target.tol
    print(f"{target.id} generate: dump vs HF[{tol.variant}] max {err.max():.3g} "
          f"median {np.median(err):.3g}")
    assert np.median(err) < tol.variant_median
    # The engine's tokens are the argmax of its own dump rows P-1 .. end-1.
    assert tokens == got[len(prompt) - 1: -1].argmax(1).tolist()
    if tol.variant_max is not None:
        held = _check_ties(oracles.hf_router_gaps(model, prompt + tokens) < ROUTER_TIE,
                           f"{target.id} generate")
        assert err[held].max() < tol.variant_max
        choices = ref[len(prompt) - 1: -1]
        decided = (oracles.top1_margin(choices) > 2 * tol.variant_max) & held[len(prompt) - 1: -1]
        assert (np.array(tokens)[decided] == choices.argmax(1)[decided]).all()


def _flip_byte_of_largest_file(engine: Path) -> Path:
    files = [p for p in engine.rglob("*") if p.is_file() and p.name != "manifest.json"]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    return victim


def test_tampered_engine_is_refused(hf_engine, tmp_path, capsys):
    target, engine = hf_engine
    copy = tmp_path / "engine"
    shutil.copytree(engine, copy)
    victim = _flip_byte_of_largest_file(copy)
    with pytest.raises(EngineDirError, match=victim.name):
        target.open_backend(copy, max_slots=1, max_context=16, max_step_tokens=8)
    rc = cli.main(["generate", str(copy), "--prompt-ids", "1,2,3", "--max-new-tokens", "2",
                   *target.generate_args])
    assert rc != 0 and victim.name in capsys.readouterr().err
