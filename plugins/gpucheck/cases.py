"""Correctness cases: every kernel against the numpy reference over the shapes that matter
(tiny, odd, gpt-oss-20b and -120b dims; 1..16 decode tokens, 512-token prefill, >chunk token
counts, window boundaries, padded rows, in-place and copied caches). Outputs are poisoned
(0xFF = NaN) before each launch so unwritten elements fail."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import data
from .cuda_rt import DTYPE_CODES, FORMAT_CODES, PATH_CODES, Cuda, Kernels

# Tolerance (see data.compare): outputs are rounded once by the kernel and once by the
# reference -> 4 unit roundoffs (2 ulps) relative; fp32 accumulation over K <= 2880 terms whose
# magnitudes exceed the result's by up to ~10x -> 2e-4 of the output scale absolute.
RTOL_ULPS, ATOL_FRAC = 4.0, 2e-4
# The MoE tensor-core path rounds the fp32 SwiGLU outputs to T before the down GEMM: a relative
# error ~u per element, averaging to ~u/sqrt(3) of the output RMS -> 4u of the output scale.


def atol_frac(op: str, path: str, dtype: str) -> float:
    return max(ATOL_FRAC, 4 * data.UNIT_ROUNDOFF[dtype]) if (op == "moe" and path == "mma") else ATOL_FRAC
ROUTER_GAP = 1e-3  # tokens whose k-th and (k+1)-th logits are closer than this may route differently


@dataclasses.dataclass(frozen=True)
class MoeCase:
    name: str
    E: int
    k: int
    H: int
    I: int
    tokens: int
    dtype: str
    paths: tuple[str, ...] = ("auto",)
    new_len: tuple[int, ...] | None = None  # batch rows of tokens/len(new_len); padded tokens -> 0


@dataclasses.dataclass(frozen=True)
class GemmCase:
    name: str
    M: int
    K: int
    N: int
    fmt: str
    bias: bool
    dtype: str
    paths: tuple[str, ...] = ("auto",)
    nan_rows: int = 0  # weight rows 0..nan_rows-1 get E8M0 scale 255 (NaN) in their first block


@dataclasses.dataclass(frozen=True)
class AttnCase:
    name: str
    H: int
    KVH: int
    D: int
    window: int
    C: int
    S: int
    past: tuple[int, ...]
    new: tuple[int, ...]
    dtype: str
    splits: tuple[int, ...] = (0,)
    in_place: bool = False
    bad_rows: tuple[int, ...] = ()  # rows whose lengths break the contract: NaN output, cache untouched


TINY, ODD = dict(E=4, k=2, H=64, I=64), dict(E=5, k=3, H=96, I=160)
G20, G120 = dict(E=32, k=4, H=2880, I=2880), dict(E=128, k=4, H=2880, I=2880)
BOTH = ("gemv", "tiled")
ALL = ("gemv", "tiled", "mma")  # mma: fp16/bf16 with mxfp4 only (int4 -> GPE_ERR_UNSUPPORTED)

MOE_CASES = [
    *[MoeCase(f"tiny t={t} {dt}", **TINY, tokens=t, dtype=dt, paths=BOTH if dt == "float32" else ALL)
      for dt in ("float32", "float16", "bfloat16") for t in (1, 17)],
    *[MoeCase(f"tiny t={t} bf16", **TINY, tokens=t, dtype="bfloat16", paths=BOTH) for t in (3, 16)],
    MoeCase("tiny t=600 (> chunk) bf16", **TINY, tokens=600, dtype="bfloat16", paths=("auto", "gemv", "mma")),
    MoeCase("tiny 3 rows x 8, padded bf16", **TINY, tokens=24, dtype="bfloat16", paths=ALL, new_len=(8, 3, 0)),
    MoeCase("tiny 2 rows x 600, padded across chunks bf16", **TINY, tokens=1200, dtype="bfloat16",
            paths=("auto", "mma"), new_len=(530, 7)),
    *[MoeCase(f"odd t={t} bf16", **ODD, tokens=t, dtype="bfloat16", paths=ALL) for t in (1, 5, 33)],
    MoeCase("20b t=1 bf16", **G20, tokens=1, dtype="bfloat16", paths=BOTH),
    MoeCase("20b t=4 bf16", **G20, tokens=4, dtype="bfloat16", paths=("auto",)),
    MoeCase("20b t=64 bf16", **G20, tokens=64, dtype="bfloat16", paths=("auto", "tiled", "mma")),  # auto = GEMV
    MoeCase("20b t=6 fp16", **G20, tokens=6, dtype="float16"),
    MoeCase("20b t=2 fp32", **G20, tokens=2, dtype="float32"),
    MoeCase("20b t=512 prefill bf16", **G20, tokens=512, dtype="bfloat16", paths=("auto", "mma")),
    MoeCase("120b t=1 bf16", **G120, tokens=1, dtype="bfloat16", paths=BOTH),
    MoeCase("120b t=8 bf16", **G120, tokens=8, dtype="bfloat16", paths=ALL),
]

GEMM_CASES = [
    *[GemmCase(f"tiny m={m} {fmt} {dt}{' bias' if b else ''}", m, 64, 33, fmt, b, dt,
               BOTH if dt == "float32" or fmt == "int4" else ALL)
      for m in (1, 17, 70) for fmt in ("mxfp4", "int4") for dt in ("float32", "float16", "bfloat16")
      for b in (True, False) if not (m == 70 and dt == "float32")],
    GemmCase("2880x4096 m=1 mxfp4 bf16", 1, 2880, 4096, "mxfp4", True, "bfloat16", BOTH),
    GemmCase("2880x4096 m=16 mxfp4 bf16", 16, 2880, 4096, "mxfp4", True, "bfloat16", ALL),
    GemmCase("2880x4096 m=3 int4 fp16", 3, 2880, 4096, "int4", False, "float16", BOTH),
    GemmCase("2880x4096 m=512 mxfp4 bf16", 512, 2880, 4096, "mxfp4", True, "bfloat16", ("auto", "mma")),
    *[GemmCase(f"E8M0 255 -> NaN m={m} mxfp4 bf16", m, 96, 40, "mxfp4", True, "bfloat16", ALL, nan_rows=5)
      for m in (3, 70)],
]

T4 = dict(H=4, KVH=2, D=16)
A20 = dict(H=64, KVH=8, D=64)
ATTN_CASES = [
    *[AttnCase(f"tiny ring w=8 prefill S=20 {dt}", **T4, window=8, C=8, S=20, past=(0, 5, 13), new=(20, 0, 7),
               dtype=dt, splits=(0, 1, 3)) for dt in ("float32", "float16", "bfloat16")],
    AttnCase("tiny full prefill S=5", **T4, window=0, C=64, S=5, past=(0, 40), new=(5, 3), dtype="bfloat16",
             splits=(0, 1, 2)),
    AttnCase("tiny ring w=8 decode boundaries", **T4, window=8, C=8, S=1, past=(0, 7, 8, 9), new=(1, 1, 1, 0),
             dtype="bfloat16", splits=(0, 1, 4)),
    AttnCase("tiny ring in-place", **T4, window=8, C=8, S=3, past=(6, 30), new=(3, 2), dtype="float16",
             in_place=True),
    AttnCase("20b ring decode past 0/127/128/300", **A20, window=128, C=128, S=1, past=(0, 127, 128, 300),
             new=(1, 1, 1, 1), dtype="bfloat16", splits=(0, 1)),
    AttnCase("20b ring prefill S=512", **A20, window=128, C=128, S=512, past=(0, 77), new=(512, 300),
             dtype="bfloat16"),
    AttnCase("20b full prefill S=512 fp16", **A20, window=0, C=2048, S=512, past=(0,), new=(512,), dtype="float16"),
    AttnCase("20b full decode past 700/1500", **A20, window=0, C=2048, S=1, past=(700, 1500), new=(1, 1),
             dtype="bfloat16", splits=(0, 1, 5)),
    AttnCase("20b full decode in-place", **A20, window=0, C=2048, S=1, past=(1023,), new=(1,), dtype="bfloat16",
             in_place=True),
    AttnCase("D=128 G=8 S=33 odd", H=8, KVH=1, D=128, window=0, C=256, S=33, past=(100,), new=(33,),
             dtype="bfloat16", splits=(0, 1)),
    AttnCase("D=32 G=16 ring w=16", H=16, KVH=1, D=32, window=16, C=16, S=9, past=(12, 0), new=(9, 4),
             dtype="float32"),
    AttnCase("full cache overflow / negative past -> NaN rows", **T4, window=0, C=64, S=5, past=(60, 3, -1),
             new=(5, 2, 1), dtype="float16", splits=(0, 1, 2), bad_rows=(0, 2)),
]


def attention_inputs(c: AttnCase, rng: np.random.Generator):
    """(arrays to upload, the same values as the reference sees them, (sinks, cos, sin, past_len,
    new_len)) for one attention case; the RoPE tables hold every position the case reaches + 8."""
    B, S, D = len(c.past), c.S, c.D
    P = max(p + n for p, n in zip(c.past, c.new)) + 8
    inv = 1.0 / (150000.0 ** (np.arange(0, D, 2) / D))
    ang = np.arange(P)[:, None] * inv[None, :]
    cos, sin = (1.3 * np.cos(ang)).astype(np.float32), (1.3 * np.sin(ang)).astype(np.float32)
    sinks = rng.standard_normal(c.H).astype(np.float32)
    arrays = {
        "q": rng.standard_normal((B, S, c.H * D)), "k": rng.standard_normal((B, S, c.KVH * D)),
        "v": rng.standard_normal((B, S, c.KVH * D)), "pk": rng.standard_normal((B, c.KVH, c.C, D)),
        "pv": rng.standard_normal((B, c.KVH, c.C, D)),
    }
    dev_host, ref_in = {}, {}
    for name, a in arrays.items():
        dev_host[name], ref_in[name] = data.device_array(a, c.dtype)
    lens = (np.array(c.past, np.int32), np.array(c.new, np.int32))
    return dev_host, ref_in, (sinks, cos, sin, *lens)


class Runner:
    """Runs cases on the GPU and the reference; returns one record per (case, path/split)."""

    def __init__(self, cuda: Cuda, kernels: Kernels, ref, seed: int = 0):
        self.cuda, self.k, self.ref = cuda, kernels, ref
        self.rng = np.random.default_rng(seed)
        self._moe_weights: dict[tuple, tuple] = {}

    # ---- MoE ------------------------------------------------------------------------------
    def moe_weights(self, E, H, I):
        key = (E, H, I)
        if key not in self._moe_weights:
            self.cuda.free_all()  # one weight set on the device at a time
            self._moe_weights.clear()
            r = self.rng
            host = {
                "rw": (r.standard_normal((E, H)) / np.sqrt(H)).astype(np.float32),
                "rb": (0.1 * r.standard_normal(E)).astype(np.float32),
                "gub": None, "gus": None, "dnb": None, "dns": None,
                "gubias": (0.1 * r.standard_normal((E, 2 * I))).astype(np.float32),
                "dnbias": (0.1 * r.standard_normal((E, H))).astype(np.float32),
            }
            host["gub"], host["gus"] = data.mxfp4_weights(r, (E, 2 * I), H)
            host["dnb"], host["dns"] = data.mxfp4_weights(r, (E, H), I)
            dev = {name: self.cuda.to_device(a) for name, a in host.items()}
            self._moe_weights[key] = (host, dev)
        return self._moe_weights[key]

    def moe(self, c: MoeCase) -> list[dict]:
        host, dev = self.moe_weights(c.E, c.H, c.I)
        x_dev_host, x_ref = data.device_array(self.rng.standard_normal((c.tokens, c.H)), c.dtype)
        t0 = time.perf_counter()
        ref = self.ref.moe(x_ref, host, c)
        ref_s = time.perf_counter() - t0
        logits = np.sort(x_ref.astype(np.float64) @ host["rw"].T.astype(np.float64) + host["rb"], axis=-1)[:, ::-1]
        clear = (logits[:, c.k - 1] - logits[:, c.k]) > ROUTER_GAP
        x = self.cuda.to_device(x_dev_host)
        out = self.cuda.malloc(x_dev_host.nbytes)
        ws_size = self.k.size("gpe_moe_mxfp4_workspace_size", c.tokens, c.E, c.k, c.H, c.I)
        ws = self.cuda.malloc(ws_size)
        new_len = self.cuda.to_device(np.asarray(c.new_len, np.int32)) if c.new_len else None
        records = []
        try:
            for path in c.paths:
                self.cuda.poison(out, x_dev_host.nbytes)  # padded rows must be written (zeros)
                self.k.call("gpe_moe_mxfp4", DTYPE_CODES[c.dtype], PATH_CODES[path], c.tokens, c.E, c.k, c.H, c.I,
                            *data.SWIGLU, x, len(c.new_len or (1,)), new_len, dev["rw"], dev["rb"], dev["gub"], dev["gus"], dev["gubias"],
                            dev["dnb"], dev["dns"], dev["dnbias"], out, ws, ws_size, None)
                got = data.to_f32(self.cuda.to_host(out, x_dev_host.shape, x_dev_host.dtype), c.dtype)
                cmp = data.compare(got[clear], ref[clear], c.dtype, RTOL_ULPS, atol_frac("moe", path, c.dtype))
                cmp["n_nan"] = int(np.isnan(got).sum())  # over every token, near-ties included
                cmp["ok"] = cmp["ok"] and cmp["n_nan"] == 0
                records.append({"op": "MoeMxfp4", "case": c.name, "path": path, "tokens_compared": int(clear.sum()),
                                "tokens": c.tokens, "reference_s": round(ref_s, 2), **cmp})
        finally:
            for p in (x, out, ws, new_len):
                if p:
                    self.cuda.free(p)
        return records

    # ---- Gemm4bit -------------------------------------------------------------------------
    def gemm(self, c: GemmCase) -> list[dict]:
        r = self.rng
        blocks, scales = (data.mxfp4_weights(r, (c.N,), c.K) if c.fmt == "mxfp4" else data.int4_weights(r, c.N, c.K))
        bias = (0.1 * r.standard_normal(c.N)).astype(np.float32) if c.bias else None
        x_host, x_ref = data.device_array(r.standard_normal((c.M, c.K)), c.dtype)
        ref = self.ref.gemm(x_ref, blocks, scales, bias, c)[:, c.nan_rows:]  # the NaN columns: checked apart
        dev_scales = scales.copy()
        dev_scales[:c.nan_rows, 0] = 255
        ptrs = [self.cuda.to_device(a) for a in (x_host, blocks, dev_scales)]
        b_ptr = self.cuda.to_device(bias) if c.bias else None
        out_bytes = c.M * c.N * x_host.itemsize
        out = self.cuda.malloc(out_bytes)
        records = []
        try:
            for path in c.paths:
                self.cuda.poison(out, out_bytes)
                self.k.call("gpe_gemm_4bit", DTYPE_CODES[c.dtype], FORMAT_CODES[c.fmt], PATH_CODES[path], c.M, c.K,
                            c.N, ptrs[0], ptrs[1], ptrs[2], b_ptr, out, None)
                got = data.to_f32(self.cuda.to_host(out, (c.M, c.N), x_host.dtype), c.dtype)
                cmp = data.compare(got[:, c.nan_rows:], ref, c.dtype, RTOL_ULPS, atol_frac("gemm", path, c.dtype))
                nan_ok = bool(np.isnan(got[:, :c.nan_rows]).all())  # E8M0 255 is NaN (OCP MX)
                records.append({"op": "Gemm4bit", "case": c.name, "path": path, **cmp, "ok": cmp["ok"] and nan_ok,
                                **({"expected_nan_ok": nan_ok} if c.nan_rows else {})})
        finally:
            for p in ptrs + [out] + ([b_ptr] if b_ptr else []):
                self.cuda.free(p)
        return records

    # ---- SinkAttention --------------------------------------------------------------------
    def attention(self, c: AttnCase) -> list[dict]:
        B, S, D = len(c.past), c.S, c.D
        dev_host, ref_in, (sinks, cos, sin, past_len, new_len) = attention_inputs(c, self.rng)
        P = cos.shape[0]
        good = np.array([b not in c.bad_rows for b in range(B)])
        # bad rows: the reference sees new_len 0 there (output zeros, cache untouched)
        ref_out, ref_pk, ref_pv = self.ref.attention(ref_in, sinks, cos, sin, past_len, np.where(good, new_len, 0), c)
        d = {name: self.cuda.to_device(a) for name, a in dev_host.items()}
        small = [self.cuda.to_device(a) for a in (sinks, cos, sin, past_len, new_len)]
        cache_bytes = dev_host["pk"].nbytes
        out_bytes = dev_host["q"].nbytes
        out = self.cuda.malloc(out_bytes)
        present = [d["pk"], d["pv"]] if c.in_place else [self.cuda.malloc(cache_bytes), self.cuda.malloc(cache_bytes)]
        records = []
        try:
            for splits in c.splits:
                ws_size = self.k.size("gpe_sink_attention_workspace_size", B, S, c.H, c.KVH, D, splits)
                ws = self.cuda.malloc(ws_size)
                self.cuda.poison(out, out_bytes)
                if c.in_place:  # restore the past (a previous split count updated it in place)
                    self.cuda.upload(d["pk"], dev_host["pk"])
                    self.cuda.upload(d["pv"], dev_host["pv"])
                else:
                    for p in present:
                        self.cuda.poison(p, cache_bytes)
                self.k.call("gpe_sink_attention", DTYPE_CODES[c.dtype], B, S, c.H, c.KVH, D, c.C, c.window,
                            float(1.0 / np.sqrt(D)), P, splits, d["q"], d["k"], d["v"], small[0], small[1], small[2],
                            d["pk"], d["pv"], small[3], small[4], out, present[0], present[1], ws, ws_size, None)
                shape_q, shape_c = dev_host["q"].shape, dev_host["pk"].shape
                got = data.to_f32(self.cuda.to_host(out, shape_q, dev_host["q"].dtype), c.dtype)
                got_pk = data.to_f32(self.cuda.to_host(present[0], shape_c, dev_host["pk"].dtype), c.dtype)
                got_pv = data.to_f32(self.cuda.to_host(present[1], shape_c, dev_host["pv"].dtype), c.dtype)
                self.cuda.free(ws)
                out_cmp = data.compare(got[good], ref_out[good], c.dtype, RTOL_ULPS, ATOL_FRAC)
                if c.bad_rows:  # every output of a bad row is NaN, its cache as it was (compared below)
                    out_cmp["ok"] = out_cmp["ok"] and bool(np.isnan(got[~good]).all())
                # caches: bit exact (refs.kernel_keys reproduces the kernel's key arithmetic; values are copies)
                pk_cmp = data.compare(got_pk, ref_pk, c.dtype, 0.0, 0.0)
                pv_cmp = data.compare(got_pv, ref_pv, c.dtype, 0.0, 0.0)
                records.append({"op": "SinkAttention", "case": c.name, "path": f"splits={splits or 'auto'}"
                                + (" in-place" if c.in_place else ""), **out_cmp,
                                "ok": out_cmp["ok"] and pk_cmp["ok"] and pv_cmp["ok"],
                                "present_key_max_err": pk_cmp["max_abs_err"], "present_key_bad": pk_cmp["n_bad"],
                                "present_value_bad": pv_cmp["n_bad"]})
        finally:
            for p in list(d.values()) + small + [out] + ([] if c.in_place else present):
                self.cuda.free(p)
        return records
