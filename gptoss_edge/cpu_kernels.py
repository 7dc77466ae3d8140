"""Our CPU kernels for ONNX Runtime (cpu_kernels/, built by `pip install` into this package):
the op set's MoeMxfp4 and Gemm4bit as a custom-op library in the gptoss_edge domain.

`register(session_options, activations, isa)` adds the library to ONNX Runtime session options:
  activations "fp32": exact products of float activations and the stored 4-bit weights;
              "int8": activations quantized per block of 32 to int8 (as llama.cpp), faster.
  isa         "auto" (the best the CPU has) or one of ISAS to force a code path (tests).
The choice is a session config entry, so two sessions of one process may differ.
"""
from __future__ import annotations

import ctypes
import functools
import sys
from pathlib import Path

ACTIVATIONS = ("fp32", "int8")
ISAS = ("avx512", "avx2", "neon", "portable")
LIB = Path(__file__).with_name("libgptoss_edge_cpu" + (".dylib" if sys.platform == "darwin" else ".so"))


class CpuKernelsMissing(RuntimeError):
    """The native library was not built (no C++ compiler at install time)."""


def library_path() -> Path:
    if not LIB.is_file():
        raise CpuKernelsMissing(f"{LIB} is missing: reinstall gptoss-edge with a C++17 compiler present "
                                "(it builds cpu_kernels/ into the package)")
    return LIB


def available() -> bool:
    return LIB.is_file()


@functools.lru_cache(maxsize=None)
def isa(name: str = "auto") -> str | None:
    """The code path `name` resolves to on this CPU ("auto": the best), None if unusable."""
    fn = ctypes.CDLL(str(library_path())).gptoss_edge_cpu_isa
    fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
    out = fn(name.encode())
    return out.decode() if out else None


def register(so, activations: str = "fp32", isa_name: str = "auto") -> None:
    """Register the library with onnxruntime SessionOptions `so` (config entries first: the
    library reads them when it registers)."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"CPU kernel activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
    if isa_name != "auto" and isa_name not in ISAS:
        raise ValueError(f"CPU kernel isa must be 'auto' or one of {', '.join(ISAS)}, got {isa_name!r}")
    so.add_session_config_entry("gptoss_edge.cpu_activations", activations)
    so.add_session_config_entry("gptoss_edge.cpu_isa", isa_name)
    so.register_custom_ops_library(str(library_path()))
