"""Weight-format registry of the ONNX Runtime target: what each expert / dense format stores,
how the lowering runs it, and what the runtime then needs. Compile (`choose_formats`, the
lowering), `plan` and the backend read these entries instead of strings of their own.

Bytes per parameter, as stored (weights + block scales):
  MXFP4 block of 32: 16 bytes of nibbles + 1 E8M0 byte = 17/32 (the checkpoint's bytes);
  Gemm4bit int4: 16 bytes + float16 scale = 18/32; Gemm8bit: 32 bytes + float16 scale = 34/32;
  QMoE int8: 1 + 4/32, int4: 0.5 + 4/32
  (float32 scales); float32: 4.
Runtime requirement `custom_ops`: the engine's graph keeps our op-set nodes (MoeMxfp4, Gemm4bit)
and the session needs our CPU kernel library (cpu_kernels/, gptoss_edge.cpu_kernels), with the
engine's activation mode. The manifest records it as target_config["custom_ops"] (RUNTIME_KEY).
"""
from __future__ import annotations

import dataclasses

ACTIVATIONS = ("float", "int8")     # inputs of the 4-bit/8-bit GEMMs: float32 or int8 per block
CUSTOM_OPS_LIBRARY = "gptoss_edge_cpu"
RUNTIME_KEY = "custom_ops"


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    bytes_per_param: float
    exact: bool                    # the checkpoint's values, unchanged
    ort_op: str                    # what the lowering emits: our op kept, or an ORT contrib op
    custom_ops: bool               # needs our CPU kernel library at runtime
    activations: tuple[str, ...]   # activation modes it can run
    summary: str


MXFP4_B = 17 / 32
EXPERTS: dict[str, Format] = {f.name: f for f in (
    Format("mxfp4", MXFP4_B, True, "MoeMxfp4", True, ACTIVATIONS,
           "the checkpoint's MXFP4 blocks, our MoeMxfp4 CPU kernel (exact, smallest exact)"),
    Format("float", 4.0, True, "MoE", False, ACTIVATIONS,
           "dequantized to float32, ONNX Runtime MoE (exact, 7.5x mxfp4's bytes)"),
    Format("int8", 1 + 4 / 32, True, "QMoE", False, ("int8",),
           "lossless int8 repack, ONNX Runtime QMoE (its CPU kernel always quantizes activations)"),
    Format("int4", 0.5 + 4 / 32, False, "QMoE", False, ACTIVATIONS,
           "re-rounded to int4 blocks of 32, ONNX Runtime QMoE (lossy)"),
)}
# Most exact first, then smallest: the order compile's automatic choice tries.
EXPERT_PREFERENCE = ("mxfp4", "float", "int8", "int4")

DENSE: dict[str, Format] = {f.name: f for f in (
    Format("float", 4.0, True, "MatMul", False, ACTIVATIONS, "float32 MatMul"),
    Format("8bit", 34 / 32, False, "Gemm8bit", True, ACTIVATIONS,
           "int8 blocks of 32 with float16 scales (llama.cpp's q8_0; |error| <= half a step, "
           "1/254 of each block's max), our Gemm8bit CPU kernel"),
    Format("4bit-mxfp4", MXFP4_B, False, "Gemm4bit", True, ACTIVATIONS,
           "MXFP4 blocks of 32 (compiler/dense4bit.py), our Gemm4bit CPU kernel (lossy)"),
    Format("4bit-int4", 18 / 32, False, "Gemm4bit", True, ACTIVATIONS,
           "int4 blocks of 32 with float16 scales, our Gemm4bit CPU kernel (lossy)"),
)}
DENSE_MODES = ("float", "8bit", "4bit")
DENSE_4BIT_FORMATS = ("mxfp4", "int4")


def expert(name: str) -> Format:
    if name not in EXPERTS:
        raise ValueError(f"--experts must be one of {', '.join(EXPERTS)}, got {name!r}")
    return EXPERTS[name]


def dense(mode: str, dense_format: str = "mxfp4") -> Format:
    """--dense float | 8bit | 4bit (with --dense-format mxfp4 | int4)."""
    if mode not in DENSE_MODES:
        raise ValueError(f"--dense must be one of {', '.join(DENSE_MODES)}, got {mode!r}")
    if mode in ("float", "8bit"):
        return DENSE[mode]
    if dense_format not in DENSE_4BIT_FORMATS:
        raise ValueError(f"--dense-format must be one of {', '.join(DENSE_4BIT_FORMATS)}, got {dense_format!r}")
    return DENSE[f"4bit-{dense_format}"]


def check_activations(f: Format, activations: str, option: str) -> None:
    if activations not in ACTIVATIONS:
        raise ValueError(f"--activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
    if activations not in f.activations:
        raise ValueError(f"{option} {f.name} runs only with --activations {' or '.join(f.activations)} "
                         f"({f.summary}); for exact experts use --experts mxfp4")


def runtime_requirements(formats: list[Format], activations: str) -> dict | None:
    """The manifest's custom-op entry (None: plain ONNX Runtime suffices)."""
    if not any(f.custom_ops for f in formats):
        return None
    return {"library": CUSTOM_OPS_LIBRARY, "activations": "int8" if activations == "int8" else "fp32"}
