"""The numpy references the GPU results are compared with. MoE and Gemm4bit: the project's
gptoss_edge.compiler.reference_kernels when importable (preferred), else fallback_ref (this
folder's own formulas from the op-set docs; a CPU test proves they agree). SinkAttention:
fallback_ref given the kernel's own key store (see Reference.attention)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from . import fallback_ref
from .data import SWIGLU, round_to


def import_reference_kernels(root: Path):
    """gptoss_edge.compiler.reference_kernels: installed, or from the checkout at `root` (its
    gptoss_edge/compiler links to compiler/, so the repository root on sys.path suffices)."""
    if str(root) not in sys.path:
        sys.path.append(str(root))
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
        new_len = np.asarray(c.new_len, np.int32) if getattr(c, "new_len", None) else None
        args = (x, w["rw"], w["rb"], w["gub"], w["gus"], w["gubias"], w["dnb"], w["dns"], w["dnbias"], new_len)
        kw = dict(num_experts=c.E, top_k=c.k, hidden_size=c.H, intermediate_size=c.I, swiglu_limit=SWIGLU[0],
                  swiglu_alpha=SWIGLU[1], swiglu_linear_offset=SWIGLU[2])
        fn = self.rk.moe_mxfp4 if self.rk else fallback_ref.moe_mxfp4
        return np.asarray(fn(*args, **kw), np.float64)

    def gemm(self, x, blocks, scales, bias, c) -> np.ndarray:
        kw = dict(format=c.fmt, in_features=c.K, out_features=c.N)
        fn = self.rk.gemm_4bit if self.rk else fallback_ref.gemm_4bit
        return np.asarray(fn(x, blocks, scales, bias, **kw), np.float64)

    # SinkAttention: the kernel stores this step's RoPE'd keys in T and attends to the stored
    # values. A float64 RoPE rounded to T (the project reference) lands on the other side of a
    # rounding boundary for ~1e-4 of the keys (bf16/fp16), and with few visible keys one such
    # key moves outputs by more than any rounding-based tolerance. So attention is checked
    # against the op-set formulas of fallback_ref (proven equal to the project reference on
    # CPU, tests/test_gpu_check.py) given the kernel's own key store (kernel_keys), bit exact.
    attention_name = "gpucheck.fallback_ref with the kernel's key rounding (gpucheck.refs.kernel_keys)"

    def attention(self, a: dict, sinks, cos, sin, past_len, new_len, c):
        """-> (output float64 rounded to T, present_key, present_value float32)."""
        kw = dict(num_heads=c.H, num_kv_heads=c.KVH, head_dim=c.D, window=c.window, scale=float(1.0 / np.sqrt(c.D)))
        out, pk, pv = fallback_ref.sink_attention(a["q"], a["k"], a["v"], sinks, cos, sin, a["pk"], a["pv"],
                                                  past_len, new_len, store_keys=kernel_keys(c.dtype), **kw)
        return np.asarray(round_to(out, c.dtype), np.float64), np.asarray(pk, np.float32), np.asarray(pv, np.float32)


def kernel_keys(dtype: str):
    """The keys sink_attention/kernel.cu rope_keys_kernel stores: fp32 products and sums each
    rounded once (the kernel uses __fmul_rn/__fsub_rn/__fadd_rn, so no FMA contraction), then
    rounded to T. k [n, KVH, D] (T values), cos/sin [n, D/2] float32 -> float32 values of T."""
    def store(k: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        x = np.asarray(k, np.float32)
        h = x.shape[-1] // 2
        c, s = np.asarray(cos, np.float32)[:, None, :], np.asarray(sin, np.float32)[:, None, :]
        x1, x2 = x[..., :h], x[..., h:]
        return round_to(np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1), dtype)
    return store
