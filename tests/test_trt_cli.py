"""build-engine and selftest as a user meets them on a machine without TensorRT / plugin library
/ GPU: one line per problem, no traceback, exit codes, the selftest report. And the selftest's
parity harness and verdict, run on CPU with the reference backend on both sides."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gptoss_edge import selftest
from gptoss_edge.runtime.engine.reference_backend import ReferenceBackend
from trt_support import CFG, compile_trt_engine, without_tensorrt


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return compile_trt_engine(tmp_path_factory.mktemp("trt-cli"), "engine", "--precision", "fp32")


def cli(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss_edge.cli", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def one_error_line(r: subprocess.CompletedProcess, prefix: str) -> str:
    """The failure is the last stderr line (progress lines may precede it), and the only error."""
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and sum("error" in ln for ln in lines) == 1, r.stderr
    assert lines[-1].startswith(prefix), lines[-1]
    return lines[-1]


def test_build_engine_bad_inputs(engine, tmp_path, tiny_engine):
    r = cli("build-engine", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such engine directory" in one_error_line(r, "gptoss-edge build-engine: error:")
    r = cli("build-engine", str(tiny_engine))
    line = one_error_line(r, "gptoss-edge build-engine: error:")
    assert r.returncode == 2 and "target 'onnxruntime'; build-engine builds engines compiled with --target tensorrt" in line


@without_tensorrt
def test_build_engine_without_tensorrt(engine):
    for extra in ((), ("--if-needed",)):
        r = cli("build-engine", str(engine), "--plugins", "/nonexistent/lib.so", *extra)
        line = one_error_line(r, "gptoss-edge build-engine: error: TensorRT is not installed")
        assert r.returncode == 2 and "--backend reference" in line
    m = json.loads((engine / "manifest.json").read_text())
    assert m["target_config"]["plan"] is None and set(m["files"]) == {"model.onnx", "model.onnx.data"}


@without_tensorrt
def test_selftest_without_tensorrt_lists_each_missing_piece(tmp_path):
    r = cli("selftest", "--plugins", str(tmp_path / "libgptoss_edge_plugins.so"), "--report", "r.json", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    missing = [ln for ln in r.stderr.splitlines() if ln.startswith("missing: ")]
    assert any("TensorRT is not installed" in ln for ln in missing)
    assert any(f"{tmp_path / 'libgptoss_edge_plugins.so'}" in ln and "not found" in ln for ln in missing)
    gpu = [ln for ln in missing if "CUDA GPU" in ln or "libcudart" in ln]
    assert len(gpu) <= 1                       # a GPU may exist where TensorRT does not
    assert r.stderr.strip().endswith("selftest: FAILED")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and len(report["problems"]) == len(missing)
    assert "cuda_runtime" in report["facts"] or gpu


def test_generate_auto_on_tensorrt_engine(engine):
    from gptoss_edge.trt_env import tensorrt_available
    if tensorrt_available():
        pytest.skip("TensorRT installed: auto runs it")
    r = cli("generate", str(engine), "--prompt-ids", "1,2,3", "--max-new-tokens", "2")
    line = one_error_line(r, "gptoss-edge generate: error:")
    assert r.returncode == 2 and "pass --backend reference" in line
    r = cli("generate", str(engine), "--backend", "reference", "--prompt-ids", "1,2,3", "--max-new-tokens", "2",
            "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["token_ids"]) == 2


def test_parity_harness_and_verdict(engine):
    """run_parity_case on two backends over one graph (here both the reference backend):
    identical logits pass every tolerance; a shift on every position fails fp32 and fp16; one
    position off by much (a router near-tie) passes fp32 within its 1% allowance."""
    ids = selftest.prompts(CFG.vocab_size, (200, 40))
    limits = dict(max_slots=2, max_context=220, max_step_tokens=128)
    a = ReferenceBackend(engine, verify=False, **limits)
    got, tokens = selftest.run_parity_case(a, ids, 4)
    assert [g.shape for g in got] == [(204, CFG.vocab_size), (44, CFG.vocab_size)]
    assert tokens[0] == [int(got[0][199 + k].argmax()) for k in range(4)]
    want, forced = selftest.run_parity_case(a, ids, 4, forced=tokens)
    assert forced == tokens
    starts = [len(p) for p in ids]
    for precision, tol in selftest.TOLERANCES.items():
        v = selftest.compare(got, want, starts, tol)
        assert v["ok"] and v["max_abs"] == 0.0 and v["greedy_agreement"] == 1.0, precision
    shifted = [g + np.float32(0.5) * (np.arange(g.shape[1]) % 2) for g in got]
    assert not selftest.compare(shifted, want, starts, selftest.TOLERANCES["fp32"])["ok"]
    assert not selftest.compare(shifted, want, starts, selftest.TOLERANCES["fp16"])["ok"]
    one = [g.copy() for g in got]
    one[0][10, 3] += 3.0
    v = selftest.compare(one, want, starts, selftest.TOLERANCES["fp32"])
    assert v["ok"] and v["positions_over_max"] == 1 and v["allowed_over_max"] == 2
    perf = selftest.measure(a, CFG.vocab_size, prompt_len=32, decode=3)
    assert perf["prompt_tokens"] == 32 and perf["decode_tokens"] == 3 and perf["ttft_ms"] > 0
    a.close()


def test_selftest_default_engine_holds_the_selftest_case(tmp_path, monkeypatch):
    """The embedded model compiled the way selftest compiles it (cached) takes the selftest's
    batch, chunk and context, and the reference half of the case runs on it."""
    from gptoss_edge.engine_dir import load_manifest
    from gptoss_edge.target_config import target_config_of

    monkeypatch.setenv("GPTOSS_EDGE_CACHE", str(tmp_path))
    engine = selftest.default_tensorrt_engine("fp32", lambda s: None)
    assert engine.parent == tmp_path / "selftest"
    assert selftest.default_tensorrt_engine("fp32", lambda s: None) == engine            # cached
    m = load_manifest(engine, verify=False)
    tc = target_config_of(m)
    assert m.target == "tensorrt" and tc.precision == "fp32" and tc.plan is None
    assert tc.max_batch >= len(selftest.PROMPT_LENGTHS) and tc.max_step_tokens >= 256
    assert tc.max_context >= max(selftest.PROMPT_LENGTHS) + selftest.DECODE_STEPS
    ids = selftest.prompts(m.config.vocab_size)
    ref = ReferenceBackend(engine, verify=False, max_slots=3, max_context=max(map(len, ids)) + 2, max_step_tokens=256)
    got, tokens = selftest.run_parity_case(ref, ids, 2)
    assert [g.shape[0] for g in got] == [n + 2 for n in selftest.PROMPT_LENGTHS] and all(len(t) == 2 for t in tokens)
    ref.close()


@without_tensorrt
def test_serve_build_engine_fails_in_one_line_and_skips_other_targets(engine, tiny_engine, tmp_path):
    from gptoss_edge.compiler.trt_build import ensure_plan
    assert ensure_plan(tiny_engine, log=lambda s: None) is False          # onnxruntime engine: nothing to build
    r = cli("serve", str(engine), "--build-engine", "--listen", f"unix:{tmp_path / 's.sock'}")
    line = one_error_line(r, "error: build-engine: TensorRT is not installed")
    assert r.returncode == 2 and not (tmp_path / "s.sock").exists() and "--backend reference" in line
