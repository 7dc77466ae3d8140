"""Dense weights -> Gemm4bit blocks (the op set's GEMM_4BIT layout), lazily, row block by row block.

  mxfp4: compiler/mxfp4.encode (OCP MX: shared exponent X = floor(log2 max|w|) - 2, nearest-even
         E2M1, saturating at 6): |error| <= max(|w|, 2^X) / 3 per element (half a grid gap,
         <= 0.25 max(|w|, 2^X), below 6 * 2^X; saturation above it, |w| < 8 * 2^X).
  int4:  compiler/mxfp4.quantize_int4 (symmetric, scale max|w| / 7 rounded to float16, the op
         set's int4 format, then q in [-7, 7] nearest to w / scale), nibble q + 8: the nearest
         value the block can hold, |error| <= scale / 2 (at the block max: 7x the float16
         rounding of the scale, < scale / 2^8 for normal float16 scales).
Both: [N, K/32, 16] bytes, byte j holds elements 2j (low nibble) and 2j+1 (high nibble).
  q8:    the op set's Gemm8bit (llama.cpp's q8_0, CPU target only): d = max|w| / 127 rounded to
         float16, q = w / d rounded to nearest (ties to even) and clipped to [-127, 127]:
         |error| <= d / 2 (the clip at the block max costs at most 127 x d x 2^-11 < d / 16).
         [N, K/32, 32] int8 in natural order, float16 scales [N, K/32].
Peak memory: one 32 MB group of output rows read from the checkpoint and its encoding
temporaries (~0.4 GB for MXFP4), see quantize_lazy.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx

from gptoss_edge.compiler import mxfp4
from gptoss_edge.compiler.graph.ir import Graph, Initializer, lazy

FORMATS = ("mxfp4", "int4")
BLOCK = mxfp4.BLOCK


def quantize_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (blocks uint8 [N, K/32, 16], E8M0 scales uint8 [N, K/32])."""
    return mxfp4.encode(w)


def quantize_int4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (blocks uint8 [N, K/32, 16], float16 scales [N, K/32])."""
    q, scale = mxfp4.quantize_int4(w, BLOCK, scale_dtype=np.float16)
    codes = (q.astype(np.int16) + 8).astype(np.uint8).reshape(w.shape[0], -1, BLOCK)
    return mxfp4.pack_nibbles(codes), scale


def quantize_q8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, K] -> (q int8 [N, K/32, 32], float16 scales [N, K/32])."""
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK).astype(np.float32)
    d = (np.abs(blocks).max(axis=-1) / np.float32(127)).astype(np.float16)
    if not np.isfinite(d).all():
        raise ValueError("a weight block's max |w| / 127 overflows float16")
    d32 = d.astype(np.float32)[..., None]
    q = np.rint(np.divide(blocks, d32, out=np.zeros_like(blocks), where=d32 > 0))
    return np.clip(q, -127, 127).astype(np.int8), d


QUANTIZERS = {"mxfp4": quantize_mxfp4, "int4": quantize_int4, "q8": quantize_q8}
# (blocks dtype, bytes per block, scales dtype) of each format's two initializers
LAYOUTS = {"mxfp4": (np.uint8, 16, np.uint8), "int4": (np.uint8, 16, np.float16), "q8": (np.int8, 32, np.float16)}


def quantize_lazy(name: str, w_t: Initializer, fmt: str,
                  read_rows: Callable[[int, int], np.ndarray] | None = None,
                  group_bytes: int = 32 << 20) -> tuple[Initializer, Initializer]:
    """W^T [K, N] float -> lazy (blocks [N, K/32, 16] uint8 or [N, K/32, 32] int8 (q8), scales
    [N, K/32]) initializers.

    read_rows(start, stop): rows start..stop of W [N, K] itself (the checkpoint tensor,
    `weights.get(w_t.source, rows=...)`): peak memory = one group of group_bytes rows (32 MB)
    plus the encoder's temporaries (MXFP4 encodes in float64: ~12x the group).
    Without it W^T is materialized and transposed (twice the matrix; small models, tests)."""
    if fmt not in QUANTIZERS:
        raise ValueError(f"dense block format must be one of {', '.join(QUANTIZERS)}, got {fmt!r}")
    k, n = w_t.shape
    if k % BLOCK:
        raise ValueError(f"{w_t.name}: in_features {k} is not a multiple of {BLOCK}")
    quantize = QUANTIZERS[fmt]
    rows = max(1, group_bytes // (4 * k))
    kept_scales: list[np.ndarray] = []      # the blocks pass keeps the (1/32-size) scales

    def group(w, i: int) -> np.ndarray:
        stop = min(i + rows, n)
        part = read_rows(i, stop) if read_rows is not None else w[i:stop]
        if tuple(part.shape) != (stop - i, k):
            raise ValueError(f"{w_t.name} ({w_t.source}): rows {i}:{stop} have shape {tuple(part.shape)}, "
                             f"expected {(stop - i, k)}")
        return np.ascontiguousarray(part, dtype=np.float32)

    def chunks():
        w = None if read_rows is not None else w_t.array().T
        for i in range(0, n, rows):
            yield quantize(group(w, i))

    def blocks():
        kept_scales.clear()
        for b, s in chunks():
            kept_scales.append(s)
            yield b

    def scales():
        if sum(len(s) for s in kept_scales) == n:   # written right after the blocks: no 2nd pass
            yield from kept_scales
            kept_scales.clear()
        else:
            yield from (s for _, s in chunks())

    block_dtype, block_bytes, scale_dtype = LAYOUTS[fmt]
    return (lazy(f"{name}_blocks", block_dtype, [n, k // BLOCK, block_bytes], blocks, source=w_t.source),
            lazy(f"{name}_scales", scale_dtype, [n, k // BLOCK], scales, source=w_t.source))


# ---- MatMul(x, W^T) [+ Add(b)] -> Gemm4bit / Gemm8bit, shared by the lowerings ----
def is_dense(g: Graph, n: onnx.NodeProto) -> bool:
    """A projection the lowerings may make 4-bit: MatMul by a 2-D initializer, K a multiple of 32."""
    return (n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and n.input[1] in g.initializers
            and len(g.initializers[n.input[1]].shape) == 2 and g.initializers[n.input[1]].shape[0] % BLOCK == 0)


@dataclasses.dataclass(frozen=True)
class DenseGemmParts:
    name: str                  # node name
    x: str                     # input activation
    blocks: Initializer
    scales: Initializer
    bias: str | None           # the absorbed Add's bias initializer
    output: str
    absorbed: set[str]         # names of the canonical nodes the Gemm4bit/Gemm8bit replaces (the Add)
    attrs: dict


def dense_gemm_parts(g: Graph, n: onnx.NodeProto, consumers, fmt: str, weights=None) -> DenseGemmParts:
    """The Gemm4bit (Gemm8bit for fmt "q8") replacing MatMul node `n` (and its bias Add when it
    is the only consumer).
    `weights` (the checkpoint) lets the quantizer read W row groups directly (bounded memory)."""
    w_t = g.initializers[n.input[1]]
    k, n_out = w_t.shape
    read_rows = ((lambda i, j: weights.get(w_t.source, rows=(i, j))) if weights is not None and w_t.source
                 else None)
    blocks, scales = quantize_lazy(f"{n.name}/weight", w_t, fmt, read_rows)
    uses = consumers.get(n.output[0], [])
    bias, absorbed, y = None, set(), n.output[0]
    if (len(uses) == 1 and uses[0].op_type == "Add" and uses[0].input[0] == n.output[0]
            and uses[0].input[1] in g.initializers and g.initializers[uses[0].input[1]].shape == (n_out,)):
        bias, absorbed, y = uses[0].input[1], {uses[0].name}, uses[0].output[0]
    op = "gemm8bit" if fmt == "q8" else "gemm4bit"
    name = n.name.rsplit("/", 1)[0] + f"/{op}" if "/" in n.name else n.name
    attrs = dict(in_features=k, out_features=n_out) if fmt == "q8" else dict(format=fmt, in_features=k, out_features=n_out)
    return DenseGemmParts(name, n.input[0], blocks, scales, bias, y, absorbed, attrs)
