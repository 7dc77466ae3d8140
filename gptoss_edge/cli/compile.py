"""`gptoss-edge compile CHECKPOINT -o ENGINE_DIR --target onnxruntime [--experts ...] [--dense ...]`"""
from __future__ import annotations

import argparse
import sys

from gptoss_edge.compiler import formats, lower_ort, lower_trt


def register(sub: argparse._SubParsersAction) -> None:
    from gptoss_edge.compiler.compile import TARGETS
    p = sub.add_parser("compile", help="compile a gpt-oss checkpoint into an engine directory",
                       description="Compile a gpt-oss checkpoint (HF or original layout) into an engine directory.")
    p.add_argument("checkpoint", help="checkpoint directory (safetensors + config.json)")
    p.add_argument("-o", "--output", required=True, help="engine directory to write (replaced atomically)")
    p.add_argument("--target", default="onnxruntime", choices=sorted(TARGETS))
    p.add_argument("--experts", choices=lower_ort.EXPERT_MODES, default=None,
                   help="onnxruntime expert weights: " + "; ".join(f"{f.name}: {f.summary}"
                                                                   for f in formats.EXPERTS.values())
                        + ". Default: the most exact that fits --max-memory (mxfp4)")
    p.add_argument("--dense", choices=sorted(set(lower_ort.DENSE_MODES) | set(lower_trt.DENSE_MODES)),
                   default=None, help="attention and lm_head weights: float/16bit (the activation "
                   "precision), 8bit (onnxruntime: our Gemm8bit, int8 blocks of 32 with float16 scales, "
                   "as llama.cpp's q8_0) or 4bit (our Gemm4bit on both targets, blocks of 32, "
                   "--dense-format); default: the most exact that fits --max-memory")
    p.add_argument("--embedding", choices=lower_ort.EMBEDDING_MODES, default=None,
                   help="onnxruntime: embedding table bf16 (exact for bf16 checkpoints, half the bytes) "
                        "or float; default: bf16 when the checkpoint stores it in bf16")
    p.add_argument("--activations", choices=lower_ort.ACTIVATION_MODES, default="float",
                   help="onnxruntime: inputs of the quantized GEMMs (mxfp4/int8/int4 experts, 8bit/4bit dense) stay "
                        "float32 (exact on the stored weights) or are quantized to int8 per block of 32 "
                        "(faster; int8 experts always run this way)")
    p.add_argument("--attention", choices=lower_ort.ATTENTION_MODES, default="auto",
                   help="onnxruntime full-attention layers: auto (our SinkAttention kernel when the engine uses "
                        "our CPU kernels, else GroupQueryAttention) or gqa (always ONNX Runtime's "
                        "GroupQueryAttention); window layers always use GroupQueryAttention")
    p.add_argument("--precision", choices=sorted(lower_trt.PRECISIONS), default="fp16",
                   help="tensorrt: activation precision (residual stream, norms, logits stay float32)")
    p.add_argument("--dense-format", choices=("mxfp4", "int4"), default="mxfp4",
                   help="--dense 4bit: Gemm4bit block format")
    p.add_argument("--max-batch", type=int, default=1, help="tensorrt: optimization profile batch maximum")
    p.add_argument("--max-step-tokens", type=int, default=512,
                   help="tensorrt: optimization profile maximum of tokens per row per step (prefill chunk)")
    p.add_argument("--max-memory", type=float, default=14.0, metavar="GiB",
                   help="memory budget for weights + one 4k-token KV cache (default 14)")
    p.add_argument("--max-positions", type=int, default=None,
                   help="RoPE table rows (default: the model's max_position_embeddings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
    opts = CompileOptions(target=args.target, experts=args.experts, dense=args.dense,
                          embedding=args.embedding, activations=args.activations,
                          max_memory_gib=args.max_memory,
                          max_positions=args.max_positions, precision=args.precision,
                          dense_format=args.dense_format, max_batch=args.max_batch,
                          max_step_tokens=args.max_step_tokens, attention=args.attention)
    try:
        summary = compile_checkpoint(args.checkpoint, args.output, opts,
                                     show_progress=False if args.no_progress else None)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"gptoss-edge compile: error: {e}", file=sys.stderr)
        return 2
    print(summary.text(), file=sys.stderr)
    return 0
