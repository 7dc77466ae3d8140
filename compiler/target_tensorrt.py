"""The TensorRT target of `gptoss-edge compile`: writes the TensorRT-target ONNX (our ops as plugin
nodes, see lower_trt.py) and records in the manifest what the engine build (a separate step, on
the device, with TensorRT and the plugin library) needs: precision, optimization-profile ranges,
the plugins by name/version/namespace, the KV cache layout. TensorRT is not needed here.

target_config:
  model_file, precision, dense, dense_format, experts ("mxfp4": checkpoint bytes, as int8),
  max_batch, max_context, max_step_tokens, max_positions (RoPE rows),
  profiles {dim: [min, opt, max]} for batch / seq / kv_capacity (window layers: fixed rings),
  plugins [{name, version, namespace}], kv_layout, engine_file (null until built).
"""
from __future__ import annotations

from typing import Any

from gptoss_edge.compiler import lower_trt, opset
from gptoss_edge.compiler.graph import onnx_io
from gptoss_edge.compiler.graph.ir import Graph

MODEL_FILE = "model.onnx"


def _dense_mode(dense: str) -> str:
    """The compile CLI's default dense mode "float" means: not 4-bit (activation precision)."""
    return "16bit" if dense == "float" else dense


def kv_layout(cfg, precision: str) -> dict[str, Any]:
    itemsize = 4 if precision == "fp32" else 2
    rings = [i for i in range(cfg.num_hidden_layers) if cfg.is_sliding(i)]
    full = [i for i in range(cfg.num_hidden_layers) if not cfg.is_sliding(i)]
    return {"dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision],
            "axes": ["batch", "num_kv_heads", "capacity", "head_dim"],
            "ring_layers": rings, "ring_slots": cfg.sliding_window, "full_layers": full,
            "full_capacity_dim": "kv_capacity",
            "bytes_per_token": len(full) * 2 * cfg.kv_size * itemsize,
            "bytes_per_ring": len(rings) * 2 * cfg.kv_size * itemsize * cfg.sliding_window}


def target_tensorrt(graph: Graph, ckpt, opts, w, bar) -> dict[str, Any]:
    """TargetFn of compiler/compile.py (opts: its CompileOptions)."""
    from gptoss_edge.compiler.compile import bindings
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
    return {
        "model_file": MODEL_FILE,
        "precision": opts.precision, "dense": dense,
        "dense_format": opts.dense_format if dense == "4bit" else None,
        "experts": "mxfp4",
        "max_batch": opts.max_batch, "max_context": positions,
        "max_step_tokens": profiles["seq"][2], "max_positions": positions,
        "profiles": profiles,
        "plugins": [{"name": op, "version": opset.spec(op).plugin_version,
                     "namespace": opset.PLUGIN_NAMESPACE} for op in used],
        "opset": {"domain": opset.DOMAIN, "version": opset.OPSET_VERSION},
        "kv_layout": kv_layout(cfg, opts.precision),
        "weight_bytes": lowered.total_weight_bytes(),
        "engine_file": None,
        "bindings": bindings(lowered),
    }


def choose_experts(graph: Graph, cfg, opts) -> tuple[str, str, dict[str, int]]:
    """TensorRT keeps the checkpoint's MXFP4 experts (decoded in registers by the plugin)."""
    if opts.experts not in (None, "mxfp4"):
        raise ValueError(f"--experts {opts.experts}: the tensorrt target keeps the checkpoint's MXFP4 "
                         f"experts (the MoeMxfp4 plugin); --experts is an onnxruntime option")
    dense = _dense_mode(opts.dense)
    lowered = lower_trt.lower(graph, precision=opts.precision, dense=dense, dense_format=opts.dense_format)
    return "mxfp4", "the MoeMxfp4 plugin reads the checkpoint's MXFP4 bytes", \
        {"mxfp4": lowered.total_weight_bytes()}
