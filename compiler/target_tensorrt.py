"""The TensorRT target of `gptoss-edge compile`: writes the TensorRT-target ONNX (our ops as plugin
nodes, see lower_trt.py) and records in the manifest what the engine build (a separate step, on
the device, with TensorRT and the plugin library) needs: precision, optimization-profile ranges,
the plugins by name/version/namespace, the KV cache layout. TensorRT is not needed here.

target_config:
  model_file, precision, dense, dense_format, experts ("mxfp4": checkpoint bytes, as int8),
  max_batch, max_context, max_step_tokens, max_positions (RoPE rows),
  profiles {dim: [min, opt, max]} for batch / seq / kv_capacity (window layers: fixed rings),
  plugins [{name, version, namespace}], kv_layout, engine_file and plan (null until
  `gptoss-edge build-engine` has built the plan; compiler/trt_build.py).
Typed as gptoss_edge.target_config.TensorRTConfig.
"""
from __future__ import annotations

from typing import Any

from gptoss_edge.compiler import lower_trt, opset, plan
from gptoss_edge.compiler.graph import onnx_io
from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.target_config import KV_DTYPES, PluginRef, TensorRTConfig

MODEL_FILE = "model.onnx"


def _dense_mode(dense: str) -> str:
    """The compile CLI's default dense mode "float" means: not 4-bit (activation precision)."""
    return "16bit" if dense == "float" else dense


def kv_layout(cfg, precision: str) -> KvLayout:
    """Cache dtype follows the precision; window layers are 128-slot rings, full layers sized by
    the `kv_capacity` dimension of the bindings."""
    return KvLayout.of(cfg, KV_DTYPES[precision])


def target_tensorrt(graph: Graph, ckpt, opts, w, bar) -> dict[str, Any]:
    """TargetFn of compiler/compile.py (opts: its CompileOptions)."""
    cfg = ckpt.config
    dense = _dense_mode(opts.dense)
    lowered = lower_trt.lower(graph, precision=opts.precision, dense=dense, dense_format=opts.dense_format,
                              weights=ckpt)
    positions = lowered.initializers["/rope/cos"].shape[0]
    profiles = lower_trt.profiles(cfg, max_batch=opts.max_batch, max_context=positions,
                                  max_step_tokens=opts.max_step_tokens)
    bar.start(len(lowered.initializers), lowered.total_weight_bytes())
    onnx_io.save(lowered, w.path(MODEL_FILE), progress=bar.advance)
    bar.finish()
    used = sorted({n.op_type for n in lowered.nodes if n.domain == opset.DOMAIN})
    tc = TensorRTConfig(
        model_file=MODEL_FILE, precision=opts.precision, dense=dense,
        dense_format=opts.dense_format if dense == "4bit" else None, experts="mxfp4",
        max_batch=opts.max_batch, max_context=positions, max_step_tokens=profiles["seq"][2],
        max_positions=positions, profiles={k: tuple(v) for k, v in profiles.items()},
        plugins=tuple(PluginRef(op, opset.spec(op).plugin_version, opset.PLUGIN_NAMESPACE) for op in used),
        opset={"domain": opset.DOMAIN, "version": opset.OPSET_VERSION},
        kv_layout=kv_layout(cfg, opts.precision), weight_bytes=lowered.total_weight_bytes())
    return {**tc.to_manifest(), "bindings": onnx_io.bindings(lowered)}


def choose_formats(graph: Graph, cfg, opts) -> tuple[str, str, str, int]:
    """(experts, dense, reason, weight bytes). Experts: the checkpoint's MXFP4 (decoded in registers
    by the MoeMxfp4 plugin). Dense (q/k/v/o, lm_head): as asked, else `plan.default_dense`: 16-bit
    when the whole memory plan (weights, KV and activations at budget_context tokens x max_batch,
    runtime overhead) fits --max-memory, else 4-bit Gemm4bit blocks (what a 16 GB device needs for
    gpt-oss-20b). `gptoss-edge plan` applies the same rule."""
    if opts.experts not in (None, "mxfp4"):
        raise ValueError(f"--experts {opts.experts}: the tensorrt target keeps the checkpoint's MXFP4 "
                         f"experts (the MoeMxfp4 plugin); --experts is an onnxruntime option")
    reason = "asked for"
    dense = _dense_mode(opts.dense) if opts.dense else None
    if dense is None:
        kw = dict(target="tensorrt", context=opts.budget_context, batch=opts.max_batch,
                  precision=opts.precision, dense_format=opts.dense_format,
                  chunk=min(opts.max_step_tokens, opts.budget_context),
                  budget_gb=opts.max_memory_gib * 2**30 / 1e9)
        dense = plan.default_dense(cfg, **kw)
        total = plan.memory_plan(cfg, dense=dense, **kw).total()
        verdict = "fits" if total <= opts.max_memory_gib * 2**30 else "exceeds"
        reason = (f"memory plan {total / 2**30:.2f} GiB at {opts.budget_context} tokens {verdict} "
                  f"--max-memory {opts.max_memory_gib:g} GiB"
                  + (" (16-bit dense layers do not fit)" if dense == "4bit" else ""))
    size = lower_trt.lower(graph, precision=opts.precision, dense=dense,
                           dense_format=opts.dense_format).total_weight_bytes()
    return "mxfp4", dense, reason, size
