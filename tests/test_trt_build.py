"""build-engine's pure parts on real compiled engines (no TensorRT needed): optimization-profile
shapes, weights moved out of the plan (the rewritten graph gives the same logits when they are
fed from model.onnx.data at the recorded offsets), the memory budget, plan compatibility
messages, the manifest update that records a plan."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from gptoss_edge.compiler import opset, schemas
from gptoss_edge.compiler import trt_build as tb
from gptoss_edge.compiler.reference_kernels import REFERENCE_OPS
from gptoss_edge.engine_dir import EngineDirError, add_files, load_manifest
from gptoss_edge.target_config import PlanRecord, target_config_of
from gptoss_edge.trt_env import Facts, plan_mismatch
from trt_support import CFG, POSITIONS, compile_trt_engine

IO = opset.ENGINE_IO
GB = 10**9


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """fp32, 4-bit dense layers (MXFP4 blocks): plugin weights of all three kinds."""
    return compile_trt_engine(tmp_path_factory.mktemp("trt-build"), "engine", "--precision", "fp32",
                              "--dense", "4bit")


def test_profile_shapes_cover_the_manifest_ranges(engine):
    m = load_manifest(engine, verify=False)
    shapes = tb.profile_shapes(target_config_of(m), m.bindings, m.config)
    H, D, W = CFG.num_key_value_heads, CFG.head_dim, CFG.sliding_window
    assert shapes[IO.INPUT_IDS] == ((1, 1), (1, 1), (3, 256))
    assert shapes[IO.PAST_LEN] == ((1,), (1,), (3,))
    ring, full = IO.past_key(0), IO.past_key(1)           # layer 0 slides, layer 1 is full
    assert CFG.is_sliding(0) and not CFG.is_sliding(1)
    assert shapes[ring] == ((1, H, W, D), (1, H, W, D), (3, H, W, D))
    assert shapes[full] == ((1, H, 1, D), (1, H, POSITIONS, D), (3, H, POSITIONS, D))
    inputs = {b["name"] for b in m.bindings["inputs"]}
    assert set(shapes) == inputs                           # every input has a symbolic batch dim
    bad = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", "mystery"]}]}
    with pytest.raises(tb.BuildError, match="input 'x': no profile range for dim 'mystery'"):
        tb.profile_shapes(target_config_of(m), bad, m.config)


def test_streamed_weights_are_the_plugin_byte_inputs(engine):
    m = load_manifest(engine, verify=False)
    model = onnx.load(str(engine / "model.onnx"), load_external_data=False)
    streamed = tb.streamed_weights(model)
    names = [w.name for w in streamed]
    assert len(names) == len(set(names))
    # per layer: MoE gate_up/down blocks + scales; per 4-bit dense projection: blocks + scales
    kinds = {n.op_type for n in model.graph.node if n.domain == opset.DOMAIN and set(n.input) & set(names)}
    assert kinds == {"MoeMxfp4", "Gemm4bit"}
    assert all(w.elem_type == onnx.TensorProto.INT8 and w.location == "model.onnx.data" for w in streamed)
    assert all(w.offset % 4096 == 0 for w in streamed)                 # page aligned (onnx_io.ALIGN)
    total = tb.initializer_bytes(model)
    rest = tb.initializer_bytes(tb.externalize(model, streamed))
    assert total - rest == sum(w.length for w in streamed)
    assert total == target_config_of(m).weight_bytes


def test_externalized_graph_fed_from_the_data_file_gives_identical_logits(engine):
    """The graph build-engine hands TensorRT, with the moved weights read back the way the
    TensorRT backend reads them (file, offset, length): same logits as the compiled graph."""
    schemas.register()
    full = onnx.load(str(engine / "model.onnx"), load_external_data=True)
    proto = onnx.load(str(engine / "model.onnx"), load_external_data=False)
    streamed = tb.streamed_weights(proto)
    moved = tb.externalize(proto, streamed)
    onnx.external_data_helper.load_external_data_for_model(moved, str(engine))
    feeds = {}
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, CFG.vocab_size, (1, 40))
    feeds[IO.INPUT_IDS] = tokens.astype(np.int64)
    feeds[IO.PAST_LEN] = np.zeros(1, np.int32)
    feeds[IO.NEW_LEN] = np.array([40], np.int32)
    feeds[IO.LOGITS_INDEX] = np.arange(40, dtype=np.int64)[None]     # every position's logits
    for i in range(CFG.num_hidden_layers):
        cap = CFG.sliding_window if CFG.is_sliding(i) else 64
        for name in (IO.past_key(i), IO.past_value(i)):
            feeds[name] = np.zeros((1, CFG.num_key_value_heads, cap, CFG.head_dim), np.float32)
    weights = {}
    for w in streamed:
        with open(engine / w.location, "rb") as f:
            f.seek(w.offset)
            weights[w.name] = np.frombuffer(f.read(w.length), np.int8).reshape(w.shape)
    want = ReferenceEvaluator(full, new_ops=REFERENCE_OPS).run([IO.LOGITS], feeds)[0]
    got = ReferenceEvaluator(moved, new_ops=REFERENCE_OPS).run([IO.LOGITS], {**feeds, **weights})[0]
    np.testing.assert_array_equal(got, want)
    assert {i.name for i in moved.graph.input} >= set(weights)


def test_memory_budget_for_20b_on_a_16gb_orin():
    # gpt-oss-20b fp16, 4-bit dense: ~1.2 GB stays in the plan (fp16 embedding + small tensors),
    # ~10.8 GB of 4-bit bytes are streamed (DESIGN.md sizes; compile figures in TENSORRT_TARGET.md).
    b = tb.memory_budget(int(13.5 * GB), True, int(1.2 * GB), int(10.8 * GB), plan_streamed_to_file=False)
    assert b.workspace == tb.WORKSPACE_CAP
    assert b.peak < 13.5 * GB and b.peak == 3 * int(1.2 * GB) + tb.WORKSPACE_CAP + tb.MARGIN
    with pytest.raises(tb.BuildError, match="drop --weights-in-plan") as e:
        tb.memory_budget(int(13.5 * GB), True, 12 * GB, 0, plan_streamed_to_file=False)
    assert "x 3 copies, shared host/device memory" in str(e.value) and "\n" not in str(e.value)
    # a discrete 16 GB card only holds the device copy: weights in the plan fit there
    d = tb.memory_budget(15 * GB, False, 12 * GB, 0, plan_streamed_to_file=False)
    assert d.workspace == 15 * GB - 12 * GB - tb.MARGIN
    # plan written as a stream (TensorRT with build_serialized_network_to_stream): 2 copies, not 3
    assert tb.memory_budget(11 * GB, True, 4 * GB, 0, True).workspace == 11 * GB - 8 * GB - tb.MARGIN


def facts(**kw) -> Facts:
    return Facts(**{**dict(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                           plugin_sha256="a" * 64), **kw})


def record(**kw) -> PlanRecord:
    f = facts(**kw)
    return PlanRecord(file="engine.plan", tensorrt_version=f.tensorrt_version, gpu_name=f.gpu_name,
                      compute_capability=f.compute_capability, plugin_library="/opt/x.so",
                      plugin_sha256=f.plugin_sha256, kv_aliased=True, streamed_weights=(), timing_cache=None,
                      builder_memory={})


@pytest.mark.parametrize("here, words", [
    (facts(tensorrt_version="10.8.0"), ["TensorRT 10.3.0 (here 10.8.0)"]),
    (facts(gpu_name="NVIDIA GeForce RTX 4060 Ti", compute_capability="8.9"),
     ["GPU Orin sm_87 (here NVIDIA GeForce RTX 4060 Ti sm_89)"]),
    (facts(plugin_sha256="b" * 64), ["plugin library sha256 aaaaaaaaaaaa (here bbbbbbbbbbbb)"]),
    (facts(tensorrt_version="11.1.0", plugin_sha256="c" * 64), ["TensorRT 10.3.0 (here 11.1.0)", "sha256"]),
])
def test_plan_mismatch_says_what_differs_in_one_line(here, words):
    msg = plan_mismatch(record(), here, "/engines/default")
    assert msg.startswith("/engines/default/engine.plan was built for ") and "\n" not in msg
    assert msg.endswith("run `gptoss-edge build-engine /engines/default` again")
    for w in words:
        assert w in msg
    assert plan_mismatch(record(), facts(), "/engines/default") is None


def test_recording_a_plan_updates_the_manifest_atomically(engine, tmp_path):
    """engine_dir.add_files: the plan and timing cache enter the file list with their hashes,
    target_config.plan is typed, and the updated engine still verifies in full."""
    copy = tmp_path / "engine"
    shutil.copytree(engine, copy)
    tc = target_config_of(load_manifest(copy))
    plan_tmp, cache_tmp = tmp_path / ".plan.tmp", tmp_path / ".cache.tmp"
    plan_tmp.write_bytes(b"plan bytes from the builder")
    cache_tmp.write_bytes(b"timing")
    rec = dataclasses.replace(record(), streamed_weights=("w",), timing_cache=tb.TIMING_CACHE_FILE)
    m = add_files(copy, {tb.PLAN_FILE: plan_tmp, tb.TIMING_CACHE_FILE: cache_tmp},
                  dataclasses.replace(tc, plan=rec).to_manifest(), progress=None)
    assert not plan_tmp.exists() and (copy / tb.PLAN_FILE).read_bytes() == b"plan bytes from the builder"
    again = load_manifest(copy, verify="full", progress=None)
    assert set(again.files) == {"model.onnx", "model.onnx.data", tb.PLAN_FILE, tb.TIMING_CACHE_FILE}
    assert target_config_of(again).plan == rec and target_config_of(again).engine_file == tb.PLAN_FILE
    assert json.loads((copy / "manifest.json").read_text())["target_config"]["engine_file"] == tb.PLAN_FILE
    assert m.files == again.files
    assert not list(tmp_path.glob(".engine.manifest.tmp-*"))
    (copy / tb.PLAN_FILE).write_bytes(b"plan bytes from elsewhere!!")   # same size, other bytes
    with pytest.raises(EngineDirError, match="engine.plan: sha256"):
        load_manifest(copy, verify="full", progress=None)
