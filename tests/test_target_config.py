"""Typed target_config (gptoss_edge/target_config.py): what compile writes reads back into the
dataclass unchanged, and a bad field gives one line naming it."""
from __future__ import annotations

import copy

import pytest

from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.target_tensorrt import kv_layout
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.target_config import (OnnxRuntimeConfig, PlanRecord, PluginRef, TargetConfigError,
                                       TensorRTConfig, parse_target_config)

CFG = preset("tiny")


def trt_config(**kw) -> TensorRTConfig:
    base = dict(model_file="model.onnx", precision="fp16", dense="16bit", dense_format=None, experts="mxfp4",
                max_batch=2, max_context=512, max_step_tokens=64, max_positions=512,
                profiles={"batch": (1, 1, 2), "seq": (1, 1, 64), "logits_rows": (1, 1, 64), "kv_capacity": (1, 512, 512),
                          "ring": (128, 128, 128)},
                plugins=(PluginRef("SinkAttention", "1", "gptoss_edge"),),
                opset={"domain": "gptoss_edge", "version": 1}, kv_layout=kv_layout(CFG, "fp16"),
                weight_bytes=1234)
    return TensorRTConfig(**{**base, **kw})


def plan_record(**kw) -> PlanRecord:
    base = dict(file="engine.plan", tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                plugin_library="/opt/gptoss-edge/lib/libgptoss_edge_plugins.so", plugin_sha256="ab" * 32,
                kv_aliased=True, streamed_weights=("/layers.0/moe/gate_up_blocks",), timing_cache="timing.cache",
                builder_memory={"workspace": 1 << 30})
    return PlanRecord(**{**base, **kw})


@pytest.mark.parametrize("plan", [None, plan_record()])
def test_tensorrt_config_round_trips(plan):
    tc = trt_config(plan=plan)
    doc = tc.to_manifest()
    assert doc["engine_file"] == (None if plan is None else "engine.plan")
    assert doc["kv_layout"]["full_capacity_dim"] == "kv_capacity"
    assert parse_target_config("tensorrt", copy.deepcopy(doc)) == tc


def test_onnxruntime_config_round_trips_and_keeps_its_formats():
    tc = OnnxRuntimeConfig(model_file="model.onnx", max_positions=256, kv_layout=KvLayout.of(CFG),
                           session_env={"ORT_QMOE_CPU_QNBIT_GEMM": "fp32"},
                           formats={"experts": "int8", "dense": "float", "embedding": "bf16", "activations": "float"})
    doc = tc.to_manifest()
    assert doc["experts"] == "int8" and doc["session"]["env"] == {"ORT_QMOE_CPU_QNBIT_GEMM": "fp32"}
    assert parse_target_config("onnxruntime", doc) == tc


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("max_batch"), "target_config: missing field 'max_batch'"),
    (lambda d: d.update(precision="fp8"), "target_config.precision: must be one of fp16, bf16, fp32, got 'fp8'"),
    (lambda d: d.update(max_context="4096"), "target_config.max_context: must be an integer >= 1"),
    (lambda d: d["profiles"].update(seq=[4, 1, 64]), "target_config.profiles.seq: must be [min, opt, max]"),
    (lambda d: d["profiles"].pop("ring"), "target_config.profiles: must give [min, opt, max] for exactly"),
    (lambda d: d["kv_layout"].pop("ring_slots"), "target_config.kv_layout lacks 'ring_slots'"),
    (lambda d: d["plugins"][0].pop("namespace"), "target_config.plugins[0]: missing field 'namespace'"),
    (lambda d: d.update(surprise=1), "unknown field(s) 'surprise'"),
    (lambda d: d.update(engine_file="engine.plan"), "engine_file 'engine.plan' disagrees with plan None"),
    (lambda d: d["kv_layout"].update(dtype="float32"), "kv_layout.dtype 'float32' disagrees with precision 'fp16'"),
])
def test_tensorrt_config_errors_name_the_field(edit, message):
    doc = trt_config().to_manifest()
    edit(doc)
    with pytest.raises(TargetConfigError) as e:
        parse_target_config("tensorrt", doc)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_plan_record_errors_name_the_field():
    doc = trt_config(plan=plan_record()).to_manifest()
    doc["plan"]["kv_aliased"] = "yes"
    with pytest.raises(TargetConfigError, match=r"target_config\.plan\.kv_aliased: must be true or false"):
        parse_target_config("tensorrt", doc)
    with pytest.raises(TargetConfigError, match="unknown target 'tpu'"):
        parse_target_config("tpu", {})


def test_compiled_manifests_parse(tiny_engine):
    """Real compile output of the ONNX Runtime target reads back (the TensorRT one: test_lower_trt)."""
    from gptoss_edge.engine_dir import load_manifest
    from gptoss_edge.target_config import target_config_of

    tc = target_config_of(load_manifest(tiny_engine, verify=False))
    assert isinstance(tc, OnnxRuntimeConfig) and tc.max_positions == 1024 and tc.formats["experts"] == "float"
