"""checkpoint -> canonical graph -> target lowering -> engine directory (atomic, manifest).

Targets register in TARGETS (target name -> function that writes the target's files into an
EngineDirWriter and returns the manifest's target_config). The ONNX Runtime target lives here;
the TensorRT target adds its own entry.

Peak memory: the largest single tensor a lowering materializes (a dense matrix such as the
lm_head in float32, or one expert) plus the ONNX protos; never a whole layer's experts.
"""
from __future__ import annotations

import dataclasses
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from gptoss_edge.compiler import formats, lower_ort, target_tensorrt
from gptoss_edge.compiler.opset import ENGINE_IO as IO
from gptoss_edge.compiler.config import ModelConfig
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.target_config import OnnxRuntimeConfig
from gptoss_edge.engine_dir import EngineDirWriter, EngineManifest
from gptoss_edge.compiler.graph import onnx_io
from gptoss_edge.compiler.graph.ir import Graph
from gptoss_edge.compiler.graph.model import build_model
from gptoss_edge.compiler.graph.ops import WeightSource
from gptoss_edge.compiler.progress import Bar

GiB = 1 << 30
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def engine_tokenizer(ckpt: WeightSource, w: EngineDirWriter) -> dict[str, Any]:
    """The checkpoint's own tokenizer.json (small models) travels into the engine dir;
    otherwise the engine names o200k_harmony, the real gpt-oss vocabulary (from bpe-openai)."""
    root = getattr(ckpt, "root", None)
    src = Path(root) / TOKENIZER_FILE if root is not None else None
    if src is not None and src.is_file():
        shutil.copyfile(src, w.path(TOKENIZER_FILE))
        return {"kind": "hf", "file": TOKENIZER_FILE}
    return {"kind": "o200k_harmony"}


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    target: str = "onnxruntime"
    experts: str | None = None       # None: chosen from max_memory_gib
    dense: str | None = None         # None: chosen from max_memory_gib (float if it fits)
    embedding: str | None = None     # "bf16" | "float"; None: bf16 when the checkpoint stores bf16
    activations: str = "float"       # onnxruntime quantized-GEMM inputs: float (exact) | int8 (faster)
    max_memory_gib: float = 14.0     # device memory budget for weights + KV cache
    max_positions: int | None = None  # RoPE table rows (default: the model's context)
    budget_context: int = 4096        # context assumed when sizing the KV cache for the budget
    dense_format: str = "mxfp4"       # Gemm4bit blocks with --dense 4bit: mxfp4 | int4
    attention: str = "auto"           # onnxruntime full-attention layers: auto (ours with our kernels) | gqa
    # TensorRT target only (see target_tensorrt.py):
    precision: str = "fp16"           # activation precision: fp16 | bf16 | fp32
    max_batch: int = 1                # optimization profile: most sequences per step
    max_step_tokens: int = 512        # optimization profile: most tokens per row per step


@dataclasses.dataclass(frozen=True)
class CompileSummary:
    manifest: EngineManifest
    options: CompileOptions
    experts: str
    experts_reason: str
    weight_bytes: int
    file_bytes: dict[str, int]
    seconds: float
    peak_rss_bytes: int

    def text(self) -> str:
        lines = [f"engine     {self.manifest.path}  (target {self.manifest.target})",
                 f"experts    {self.experts}, dense {self.options.dense}  ({self.experts_reason})",
                 f"embedding  {self.options.embedding}"]
        for name, size in sorted(self.file_bytes.items()):
            lines.append(f"file       {name:<24} {size / GiB:9.3f} GiB")
        lines += [f"weights    {self.weight_bytes / GiB:.3f} GiB",
                  f"time       {self.seconds:.1f} s",
                  f"peak RSS   {self.peak_rss_bytes / GiB:.3f} GiB"]
        return "\n".join(lines)


# A target writes its files into the writer and returns its target_config (an optional
# "bindings" entry, {"inputs": [...], "outputs": [...]}, becomes the manifest's bindings).
TargetFn = Callable[[Graph, WeightSource, CompileOptions, EngineDirWriter, Bar], dict[str, Any]]


# ---- ONNX Runtime target -----------------------------------------------------------------------
def expert_candidates(opts: CompileOptions) -> list[str]:
    """Expert formats compile may choose, most exact first (formats.EXPERT_PREFERENCE): the one
    asked for, else those that run with opts.activations and whose runtime needs are met here
    (mxfp4 needs our CPU kernel library, built by `pip install`)."""
    from gptoss_edge import cpu_kernels
    if opts.experts:
        return [opts.experts]
    return [e for e in formats.EXPERT_PREFERENCE if opts.activations in formats.EXPERTS[e].activations
            and (cpu_kernels.available() or not formats.EXPERTS[e].custom_ops)]


def choose_formats(graph: Graph, cfg: ModelConfig, opts: CompileOptions) -> tuple[str, str, str, int]:
    """(experts, dense, reason, weight bytes): the given formats, or for the ones left open the
    most exact whose weights + one slot's KV cache (budget_context tokens) fit max_memory_gib.
    Preference: expert_candidates() order with float dense, then the same with 8-bit, then 4-bit
    dense (formats needing our CPU kernels only where they were built)."""
    from gptoss_edge import cpu_kernels
    kv = KvLayout.of(cfg).slot_bytes(opts.budget_context)
    budget = opts.max_memory_gib * GiB
    dense_modes = [opts.dense] if opts.dense else [
        d for d in formats.DENSE_MODES if cpu_kernels.available() or not formats.dense(d, opts.dense_format).custom_ops]
    sizes = {(e, d): lower_ort.lower(graph, e, d, opts.embedding or "float", opts.activations,
                                     opts.dense_format).total_weight_bytes()
             for d in dense_modes for e in expert_candidates(opts)}
    if opts.experts and opts.dense:
        return opts.experts, opts.dense, "asked for", sizes[opts.experts, opts.dense]
    for (e, d), size in sizes.items():      # most exact first
        if size + kv <= budget:
            return e, d, (f"{size / GiB:.2f} GiB weights + {kv / GiB:.2f} GiB KV ({opts.budget_context} "
                          f"tokens) fit --max-memory {opts.max_memory_gib:g} GiB"), size
    (e, d), size = min(sizes.items(), key=lambda kv_: kv_[1])
    return e, d, (f"nothing fits --max-memory {opts.max_memory_gib:g} GiB; the smallest is "
                  f"{size / GiB:.2f} GiB"), size


def default_embedding(ckpt: WeightSource) -> str:
    """bf16 (exact, half the bytes) when the checkpoint stores the embedding in bf16."""
    raw = getattr(ckpt, "raw", None)
    if raw is None:
        return "float"
    return "bf16" if raw("model.embed_tokens.weight")[1] == "BF16" else "float"


def target_onnxruntime(graph: Graph, ckpt: WeightSource, opts: CompileOptions, w: EngineDirWriter,
                       bar: Bar) -> dict[str, Any]:
    cfg = ckpt.config
    experts, dense = opts.experts or "float", opts.dense or "float"
    lowered = lower_ort.lower(graph, experts, dense, opts.embedding or "float", opts.activations,
                              opts.dense_format, weights=ckpt, attention=opts.attention)
    bar.start(len(lowered.initializers), lowered.total_weight_bytes())
    onnx_io.save(lowered, w.path(MODEL_FILE), progress=bar.advance)
    bar.finish()
    positions = lowered.initializers["/rope/cos"].shape[0]
    tc = OnnxRuntimeConfig(
        model_file=MODEL_FILE, max_positions=positions,
        kv_layout=KvLayout.of(cfg),                # window layers: sliding_window_cache buffers
        formats={"experts": opts.experts, "dense": opts.dense, "embedding": opts.embedding,
                 "dense_format": opts.dense_format if dense == "4bit" else None,
                 "activations": opts.activations, "attention": opts.attention},
        custom_ops=formats.runtime_requirements(
            [formats.expert(experts), formats.dense(dense, opts.dense_format)], opts.activations))
    # bindings: moved to the manifest's top level by the driver
    return {**tc.to_manifest(), "bindings": onnx_io.bindings(lowered)}


TARGETS: dict[str, TargetFn] = {"onnxruntime": target_onnxruntime,
                                 "tensorrt": target_tensorrt.target_tensorrt}
# How each target picks its formats: (graph, cfg, options) -> (experts, dense, reason, weight bytes).
FORMAT_CHOICE = {"onnxruntime": choose_formats,
                 "tensorrt": target_tensorrt.choose_formats}


# ---- driver ------------------------------------------------------------------------------------
def compile_checkpoint(checkpoint: str | Path | WeightSource, out_dir: str | Path,
                       options: CompileOptions = CompileOptions(), *, show_progress: bool | None = None
                       ) -> CompileSummary:
    """Compile a checkpoint directory (or an opened WeightSource) into the engine dir `out_dir`."""
    if options.target not in TARGETS:
        raise ValueError(f"unknown --target {options.target!r}; choose one of {', '.join(TARGETS)}")
    t0 = time.monotonic()
    ckpt = _open(checkpoint)
    cfg = ckpt.config
    graph = build_model(ckpt, max_positions=options.max_positions)
    if options.embedding is None:
        options = dataclasses.replace(options, embedding=default_embedding(ckpt))
    experts, dense, reason, weight_bytes = FORMAT_CHOICE[options.target](graph, cfg, options)
    options = dataclasses.replace(options, experts=experts, dense=dense)
    bar = Bar(enabled=sys.stderr.isatty() if show_progress is None else show_progress,
              after_each=getattr(ckpt, "drop_pages", None))   # keeps compile RSS bounded
    with EngineDirWriter(out_dir) as w:
        target_config = TARGETS[options.target](graph, ckpt, options, w, bar)
        manifest = w.finish({
            "target": options.target, "model_config": cfg, "tokenizer": engine_tokenizer(ckpt, w),
            "bindings": target_config.pop("bindings", None) or onnx_io.bindings(graph),
            "target_config": target_config,
        })
    return CompileSummary(
        manifest=manifest, options=options, experts=experts, experts_reason=reason,
        weight_bytes=weight_bytes, file_bytes={n: e.size for n, e in manifest.files.items()},
        seconds=time.monotonic() - t0, peak_rss_bytes=peak_rss_bytes())


def _open(checkpoint) -> WeightSource:
    if isinstance(checkpoint, (str, Path)):
        from gptoss_edge.compiler.checkpoint import open_checkpoint
        return open_checkpoint(checkpoint)
    return checkpoint


def peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


