"""The TensorRT backend's CPU-checkable parts: its device buffer plan against `gptoss-edge plan`,
the slot runs of a step, the CUDA runtime binding against the real libcudart (no GPU here: its
errors), the registry/auto choice, the one-line refusals when opening is impossible, and which bytes
prefix reuse copies (on host memory)."""
from __future__ import annotations

import ctypes
import dataclasses
import shutil

import numpy as np

import pytest

from gptoss_edge.compiler import plan
from gptoss_edge.compiler import trt_build as tb
from gptoss_edge.compiler.config import preset
from gptoss_edge.cudart import CudaError, CudaRuntime, find_libcudart
from gptoss_edge.engine_dir import add_files, load_manifest
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.runtime.engine import opener
from gptoss_edge.runtime.engine.backend import BackendError, BackendInfo
from gptoss_edge.runtime.engine.prefix import SavedPrefixes
from gptoss_edge.runtime.engine.trt_backend import TrtBackend
from gptoss_edge.runtime.engine.backend import contiguous_runs
from gptoss_edge.runtime.engine.trt_buffers import device_plan, kv_buffers
from gptoss_edge.target_config import PlanRecord, target_config_of
from trt_support import compile_trt_engine, without_tensorrt


@pytest.mark.parametrize("model, context, slots", [("gpt-oss-20b", 8192, 1), ("gpt-oss-20b", 4096, 4),
                                                   ("gpt-oss-120b", 2048, 2)])
def test_kv_buffers_hold_what_plan_states(model, context, slots):
    """Device KV of max_slots slots == plan's kv_cache at batch = slots (same fp16 layout)."""
    cfg = preset(model)
    layout = KvLayout.of(cfg, "float16")
    d = device_plan(layout, max_slots=slots, max_context=context, max_batch=1, max_step=256,
                    vocab=cfg.vocab_size, aliased=True, streamed_bytes=0)
    p = plan.memory_plan(cfg, target="tensorrt", context=context, batch=slots, precision="fp16")
    assert d.kv_cache == p.total("kv_cache") == slots * layout.slot_bytes(context)
    bufs = kv_buffers(layout, slots, context)
    assert [b.capacity for b in bufs] == [128 if cfg.is_sliding(i) else context for i in range(cfg.num_hidden_layers)]
    # 20b fp16: 24 KiB per token over the full layers + 3 MiB of rings per slot (kv_layout.py)
    if model == "gpt-oss-20b":
        assert layout.slot_bytes(context) == 24 * 1024 * context + 3 * 2**20
    # no aliasing: a present buffer for one engine batch (max_batch slots), not for every slot
    na = dataclasses.replace(d, kv_present_scratch=0)
    d2 = device_plan(layout, max_slots=slots, max_context=context, max_batch=1, max_step=256,
                     vocab=cfg.vocab_size, aliased=False, streamed_bytes=0)
    assert d2.kv_present_scratch == layout.slot_bytes(context) and dataclasses.replace(d2, kv_present_scratch=0) == na
    assert d.logits == cfg.vocab_size * 4 == d.pinned_host            # one sampled row per slot
    assert d.every_position_logits == 256 * cfg.vocab_size * 4          # only if asked for


def test_contiguous_runs():
    assert contiguous_runs([3, 0, 1, 5, 6, 7], 2) == [[0, 1], [3], [5, 6], [7]]
    assert contiguous_runs([2], 4) == [[2]]
    assert contiguous_runs([0, 1, 2, 3], 8) == [[0, 1, 2, 3]]


def test_cudart_binding_against_the_real_library():
    try:
        path = find_libcudart()
    except CudaError:
        pytest.skip("no libcudart on this machine")
    cuda = CudaRuntime(path)
    major, minor = map(int, cuda.runtime_version().split("."))
    assert major >= 11
    try:
        n = cuda.device_count()
    except CudaError as e:        # no GPU / no driver: the failure names the call and CUDA's error
        msg = str(e)
        assert msg.startswith("cudaGetDeviceCount failed: cudaError") and "\n" not in msg
        return
    assert n >= 1
    facts = cuda.device_facts()
    assert facts.name and facts.total_bytes > 0 and "." in facts.compute_capability


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return compile_trt_engine(tmp_path_factory.mktemp("trt-backend"), "engine", "--precision", "fp32")


def with_plan(engine, tmp_path):
    """A copy of the engine whose manifest records a plan (its bytes are not a TensorRT plan:
    only the refusals that come before deserialization are exercised)."""
    copy = tmp_path / "planned"
    shutil.copytree(engine, copy)
    tc = target_config_of(load_manifest(copy))
    (tmp_path / ".p").write_bytes(b"not a plan")
    rec = PlanRecord(file=tb.PLAN_FILE, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                     plugin_library="/opt/gptoss-edge/lib/libgptoss_edge_plugins.so", plugin_sha256="a" * 64,
                     kv_aliased=True, streamed_weights=(), timing_cache=None, builder_memory={})
    add_files(copy, {tb.PLAN_FILE: tmp_path / ".p"}, dataclasses.replace(tc, plan=rec).to_manifest(), progress=None)
    return copy


def test_registry_runs_tensorrt_engines_on_tensorrt_or_reference(engine):
    m = load_manifest(engine, verify=False)
    assert opener.BACKENDS["tensorrt"][0] == frozenset({"tensorrt"}) and opener.AUTO["tensorrt"] == "tensorrt"
    assert opener.choose_backend(m, "reference") == "reference"
    with pytest.raises(opener.EngineOpenError, match="does not run target 'tensorrt' engines .use tensorrt or reference"):
        opener.choose_backend(m, "onnxruntime")


@without_tensorrt
def test_auto_on_a_machine_without_tensorrt_names_the_reference_backend(engine):
    with pytest.raises(opener.EngineOpenError) as e:
        opener.open_engine(engine, opener.EngineLimits(max_slots=1, max_context=64, max_step_tokens=16))
    assert "TensorRT is not installed here; pass --backend reference" in str(e.value)
    # the reference backend still runs it
    eng = opener.open_engine(engine, opener.EngineLimits(max_slots=1, max_context=64, max_step_tokens=16),
                             backend="reference", tokenizer=False)
    assert eng.backend.info.target == "reference"


@without_tensorrt
def test_tensorrt_backend_refusals_are_one_line(engine, tmp_path):
    limits = opener.EngineLimits(max_slots=1, max_context=64, max_step_tokens=16)
    with pytest.raises(opener.EngineOpenError) as e:
        opener.open_engine(engine, limits, backend="tensorrt")
    assert "has no TensorRT plan yet: run `gptoss-edge build-engine" in str(e.value) and "\n" not in str(e.value)
    planned = with_plan(engine, tmp_path)
    with pytest.raises(opener.EngineOpenError) as e:
        opener.open_engine(planned, limits, backend="tensorrt")
    assert str(e.value).startswith("TensorRT is not installed") and "--backend reference" in str(e.value)


def test_plugin_library_search_order_and_message(tmp_path):
    from pathlib import Path

    from gptoss_edge.trt_env import TrtUnavailable, find_plugin_library, plugin_candidates
    env = {"GPTOSS_EDGE_PLUGINS": "/env/lib.so"}
    assert plugin_candidates("/x/lib.so", env, Path("/repo")) == [Path("/x/lib.so")]
    assert plugin_candidates(None, env, Path("/repo")) == [
        Path("/env/lib.so"), Path("/opt/gptoss-edge/lib/libgptoss_edge_plugins.so"),
        Path("/repo/build/plugins/libgptoss_edge_plugins.so")]
    lib = tmp_path / "libgptoss_edge_plugins.so"
    lib.write_bytes(b"\x7fELF")
    assert find_plugin_library(None, {"GPTOSS_EDGE_PLUGINS": str(lib)}) == lib
    with pytest.raises(TrtUnavailable) as e:
        find_plugin_library(tmp_path / "missing.so")
    assert f"looked at {tmp_path / 'missing.so'}" in str(e.value) and "--plugins PATH" in str(e.value)


# ---- prefix reuse: the copies save_prefix/truncate make, on host memory -------------------------

class HostCopies:
    """The two CUDA calls prefix reuse makes, on host memory (the 'device' addresses are host
    pointers): what is tested is which bytes go where, not CUDA."""

    def copy_async(self, dst: int, src: int, nbytes: int, kind, stream) -> None:
        ctypes.memmove(dst, src, nbytes)

    def synchronize(self, stream) -> None:
        pass


def host_backend(slots: int, context: int):
    """A TrtBackend whose KV buffers are host arrays (opening a real one needs TensorRT)."""
    cfg = preset("tiny")
    layout = KvLayout.of(cfg, "float16")
    be = TrtBackend.__new__(TrtBackend)
    be.cuda, be.stream = HostCopies(), 0
    be._info = BackendInfo(config=cfg, target="tensorrt", max_slots=slots, max_context=context,
                           max_step_tokens=64, kv_layout=layout)
    be._kv = kv_buffers(layout, slots, context)
    rng = np.random.default_rng(0)
    mem = {(i, kv): rng.integers(0, 256, b.nbytes, dtype=np.uint8) for i, b in enumerate(be._kv) for kv in "kv"}
    be._keys = [mem[i, "k"].ctypes.data for i in range(len(be._kv))]
    be._values = [mem[i, "v"].ctypes.data for i in range(len(be._kv))]
    be._lengths = [0] * slots
    be._saved = SavedPrefixes()
    return be, mem


def test_prefix_reuse_restores_the_window_rings_and_nothing_else():
    be, mem = host_backend(slots=2, context=512)
    rings = set(be.info.kv_layout.ring_layers)
    assert rings and len(rings) < len(be._kv)          # the tiny preset has both kinds of layer

    def slot_bytes(slot):
        return {key: a.reshape(2, -1)[slot].copy() for key, a in mem.items()}

    be._lengths[1] = 300
    be.save_prefix(1)
    at_300 = slot_bytes(1)
    for a in mem.values():                              # the slot runs on: every buffer changes
        a[:] = np.random.default_rng(1).integers(0, 256, a.size, dtype=np.uint8)
    be._lengths[1] = 450
    later, slot0 = slot_bytes(1), slot_bytes(0)
    assert be.truncate(1, 400) == 300 and be.slot_length(1) == 300   # longest save <= 400
    now = slot_bytes(1)
    for (layer, kv), got in now.items():
        # rings come back as they were at 300; full layers keep their rows (rows < 300 unchanged
        # by later steps in a real run; here: untouched by truncate)
        np.testing.assert_array_equal(got, at_300[layer, kv] if be._kv[layer].layer in rings else later[layer, kv])
    for key, got in slot_bytes(0).items():              # the other slot is left alone
        np.testing.assert_array_equal(got, slot0[key])
    assert be.truncate(1, 300) == 300                   # nothing to cut
    assert be.truncate(1, 200) == 0                     # no save at or below 200
    with pytest.raises(BackendError, match="cannot keep 301 of its 0"):
        be.truncate(1, 301)
    be._lengths[0] = 100
    be.save_prefix(0)
    be.release(0)
    assert be._saved.count(0) == 0 and be.slot_length(0) == 0
