"""The numpy reference the GPU results are compared with: the project's
gptoss_edge.compiler.reference_kernels when importable (preferred), else fallback_ref (this
folder's own formulas from the op-set docs; a CPU test proves they agree)."""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np

from . import fallback_ref
from .data import SWIGLU


def import_reference_kernels(root: Path):
    """gptoss_edge.compiler.reference_kernels, installed or straight from the source tree."""
    try:
        return importlib.import_module("gptoss_edge.compiler.reference_kernels")
    except ImportError:
        pass
    for name, folder in (("gptoss_edge", root / "gptoss_edge"), ("gptoss_edge.compiler", root / "compiler")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(folder)]
            sys.modules[name] = pkg
    return importlib.import_module("gptoss_edge.compiler.reference_kernels")


class Reference:
    def __init__(self, root: Path, force_fallback: bool = False):
        self.rk, self.error = None, None
        if not force_fallback:
            try:
                self.rk = import_reference_kernels(root)
            except Exception as e:  # noqa: BLE001 - any import problem means: use the fallback
                self.error = f"{type(e).__name__}: {e}"
        self.name = "gptoss_edge.compiler.reference_kernels" if self.rk else "gpucheck.fallback_ref"

    def moe(self, x, w: dict, c) -> np.ndarray:
        args = (x, w["rw"], w["rb"], w["gub"], w["gus"], w["gubias"], w["dnb"], w["dns"], w["dnbias"])
        kw = dict(num_experts=c.E, top_k=c.k, hidden_size=c.H, intermediate_size=c.I, swiglu_limit=SWIGLU[0],
                  swiglu_alpha=SWIGLU[1], swiglu_linear_offset=SWIGLU[2])
        fn = self.rk.moe_mxfp4 if self.rk else fallback_ref.moe_mxfp4
        return np.asarray(fn(*args, **kw), np.float64)

    def gemm(self, x, blocks, scales, bias, c) -> np.ndarray:
        kw = dict(format=c.fmt, in_features=c.K, out_features=c.N)
        fn = self.rk.gemm_4bit if self.rk else fallback_ref.gemm_4bit
        return np.asarray(fn(x, blocks, scales, bias, **kw), np.float64)

    def attention(self, a: dict, sinks, cos, sin, past_len, new_len, c):
        kw = dict(num_heads=c.H, num_kv_heads=c.KVH, head_dim=c.D, window=c.window, scale=float(1.0 / np.sqrt(c.D)))
        fn = self.rk.sink_attention if self.rk else fallback_ref.sink_attention
        out, pk, pv = fn(a["q"], a["k"], a["v"], sinks, cos, sin, a["pk"], a["pv"], past_len, new_len, **kw)
        return np.asarray(out, np.float64), np.asarray(pk, np.float32), np.asarray(pv, np.float32)
