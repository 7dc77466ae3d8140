"""Benchmarks (figures, no assertions): peak device bandwidth measured with a device-to-device
copy in the same run, MoE decode effective bandwidth (selected experts' bytes / time) as a
fraction of it, prefill TFLOP/s, Gemm4bit GEMV bandwidth, attention decode bandwidth.
Every timed call runs with a cold L2 (a buffer twice the L2 size is overwritten before it, outside
the timed interval), so weights are really read from DRAM."""
from __future__ import annotations

import numpy as np

from . import data
from .cuda_rt import ATTR_L2_BYTES, DTYPE_CODES, FORMAT_CODES, PATH_CODES, Cuda, Kernels

from .data import SWIGLU


def mxfp4_bytes(rows: int, k: int) -> int:
    return rows * (k // 32) * 17  # 16 bytes of nibbles + 1 scale byte per block


class Bench:
    def __init__(self, cuda: Cuda, kernels: Kernels, iters: int = 30, seed: int = 1):
        self.cuda, self.k, self.iters = cuda, kernels, iters
        self.rng = np.random.default_rng(seed)
        l2 = max(cuda.attribute(ATTR_L2_BYTES), 1 << 20)
        self.flush = (cuda.malloc(2 * l2), 2 * l2)

    def timed(self, fn) -> float:
        fn()  # warm-up (and first-launch costs)
        self.cuda.sync("benchmark warm-up")
        return self.cuda.time_ms(fn, self.iters, self.flush)

    def peak_bandwidth(self, nbytes: int = 1 << 30) -> dict:
        nbytes = min(nbytes, self.cuda.free_memory() // 4)
        src, dst = self.cuda.malloc(nbytes), self.cuda.malloc(nbytes)
        self.cuda.poison(src, nbytes)
        ms = self.cuda.time_ms(lambda: self.cuda.copy_d2d(dst, src, nbytes), 10)
        ms = self.cuda.time_ms(lambda: self.cuda.copy_d2d(dst, src, nbytes), 20)
        self.cuda.free(src)
        self.cuda.free(dst)
        return {"bench": "device-to-device copy", "bytes_moved": 2 * nbytes, "ms": ms,
                "GB_per_s": 2 * nbytes / ms / 1e6}

    # ---- MoE ------------------------------------------------------------------------------
    def moe(self, E: int, k: int, H: int, I: int, token_counts, prefill_tokens: int, peak: float,
            dtype: str = "bfloat16") -> list[dict]:
        r = self.rng
        rw = (r.standard_normal((E, H)) / np.sqrt(H)).astype(np.float32)
        host = {"rw": rw, "rb": np.zeros(E, np.float32),
                "gub": r.integers(0, 256, (E, 2 * I, H // 32, 16), dtype=np.uint8),
                "gus": r.integers(119, 125, (E, 2 * I, H // 32), dtype=np.uint8),
                "gubias": np.zeros((E, 2 * I), np.float32),
                "dnb": r.integers(0, 256, (E, H, I // 32, 16), dtype=np.uint8),
                "dns": r.integers(119, 125, (E, H, I // 32), dtype=np.uint8),
                "dnbias": np.zeros((E, H), np.float32)}
        dev = {n: self.cuda.to_device(a) for n, a in host.items()}
        per_expert = mxfp4_bytes(2 * I, H) + mxfp4_bytes(H, I) + (2 * I + H) * 4
        results = []
        for tokens in (*token_counts, prefill_tokens):
            x_host, x_ref = data.device_array(r.standard_normal((tokens, H)), dtype)
            logits = x_ref.astype(np.float32) @ rw.T
            experts = np.unique(np.argsort(-logits, axis=-1, kind="stable")[:, :k])
            x = self.cuda.to_device(x_host)
            out = self.cuda.malloc(x_host.nbytes)
            ws_size = self.k.size("gpe_moe_mxfp4_workspace_size", tokens, E, k, H, I)
            ws = self.cuda.malloc(ws_size)

            def call(path):
                self.k.call("gpe_moe_mxfp4", DTYPE_CODES[dtype], PATH_CODES[path], tokens, E, k, H, I, *SWIGLU, x, 1, None,
                            dev["rw"], dev["rb"], dev["gub"], dev["gus"], dev["gubias"], dev["dnb"], dev["dns"],
                            dev["dnbias"], out, ws, ws_size, None)

            expert_bytes = len(experts) * per_expert
            flops = 2.0 * tokens * k * (2 * I * H + H * I)
            # 17..64 tokens: every path, so the AUTO threshold can be chosen from figures
            paths = ("gemv",) if tokens <= 16 else ("gemv", "tiled", "mma") if tokens <= 64 else ("tiled", "mma")
            for path in paths:
                ms = self.timed(lambda: call(path))
                results.append({"bench": f"MoeMxfp4 E={E} tokens={tokens} {dtype}", "path": path, "ms": ms,
                                "experts_read": int(len(experts)), "expert_bytes": expert_bytes,
                                "effective_GB_per_s": expert_bytes / ms / 1e6,
                                "fraction_of_peak": expert_bytes / ms / 1e6 / peak,
                                "TFLOP_per_s": flops / ms / 1e9})
            for p in (x, out, ws):
                self.cuda.free(p)
        for p in dev.values():
            self.cuda.free(p)
        return results

    # ---- Gemm4bit -------------------------------------------------------------------------
    def gemm(self, M: int, K: int, N: int, peak: float, fmt: str = "mxfp4", dtype: str = "bfloat16",
             path: str = "auto") -> dict:
        r = self.rng
        blocks, scales = (data.mxfp4_weights(r, (N,), K) if fmt == "mxfp4" else data.int4_weights(r, N, K))
        x_host, _ = data.device_array(r.standard_normal((M, K)), dtype)
        ptrs = [self.cuda.to_device(a) for a in (x_host, blocks, scales)]
        out = self.cuda.malloc(M * N * x_host.itemsize)
        ms = self.timed(lambda: self.k.call("gpe_gemm_4bit", DTYPE_CODES[dtype], FORMAT_CODES[fmt], PATH_CODES[path],
                                            M, K, N, ptrs[0], ptrs[1], ptrs[2], None, out, None))
        weight_bytes = blocks.nbytes + scales.nbytes
        for p in ptrs + [out]:
            self.cuda.free(p)
        return {"bench": f"Gemm4bit {fmt} M={M} K={K} N={N} {dtype}", "path": path, "ms": ms, "weight_bytes": weight_bytes,
                "effective_GB_per_s": weight_bytes / ms / 1e6, "fraction_of_peak": weight_bytes / ms / 1e6 / peak,
                "TFLOP_per_s": 2.0 * M * K * N / ms / 1e9}

    # ---- SinkAttention --------------------------------------------------------------------
    def attention(self, B: int, past: int, window: int, C: int, peak: float, H=64, KVH=8, D=64,
                  dtype: str = "bfloat16") -> dict:
        r = self.rng
        P = past + 2
        x = {n: data.device_array(r.standard_normal(shape), dtype)[0] for n, shape in {
            "q": (B, 1, H * D), "k": (B, 1, KVH * D), "v": (B, 1, KVH * D),
            "pk": (B, KVH, C, D), "pv": (B, KVH, C, D)}.items()}
        d = {n: self.cuda.to_device(a) for n, a in x.items()}
        small = [self.cuda.to_device(a) for a in (
            r.standard_normal(H).astype(np.float32), np.ones((P, D // 2), np.float32),
            np.zeros((P, D // 2), np.float32), np.full(B, past, np.int32), np.ones(B, np.int32))]
        out = self.cuda.malloc(x["q"].nbytes)
        ws_size = self.k.size("gpe_sink_attention_workspace_size", B, 1, H, KVH, D, 0)
        ws = self.cuda.malloc(ws_size)
        ms = self.timed(lambda: self.k.call(
            "gpe_sink_attention", DTYPE_CODES[dtype], B, 1, H, KVH, D, C, window, float(1 / np.sqrt(D)), P, 0,
            d["q"], d["k"], d["v"], small[0], small[1], small[2], d["pk"], d["pv"], small[3], small[4], out,
            d["pk"], d["pv"], ws, ws_size, None))  # in place, as TensorRT runs it with aliasing
        keys = min(past, window - 1) + 1 if window else past + 1
        kv_bytes = 2 * B * KVH * keys * D * x["pk"].itemsize
        for p in list(d.values()) + small + [out, ws]:
            self.cuda.free(p)
        return {"bench": f"SinkAttention decode B={B} keys={keys} window={window} {dtype}", "ms": ms,
                "kv_bytes": kv_bytes, "effective_GB_per_s": kv_bytes / ms / 1e6,
                "fraction_of_peak": kv_bytes / ms / 1e6 / peak}
