"""Lazy weight conversions for the ONNX Runtime lowering, one expert (or one row block) at a time.

  float_experts: MXFP4 [E, N, K/32, 16] + E8M0 scales -> float32 [E, N, K]   (MoE op, exact)
  int_experts:   MXFP4 -> QMoE int8 (uint8 q+128 [E, N, K], float32 scales [E, N, K/32]; exact)
                        or int4 (uint8 [E, N, K/2], nibble q+8, low nibble = even element; lossy)
  bf16_table:    float32 [V, H] -> bfloat16 (exact for values that came from bf16; checked)
Peak memory: one expert's float32 matrix (20b gate_up: 5760 x 2880 x 4 B = 66 MB).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from gptoss_edge.compiler import mxfp4
from gptoss_edge.compiler.graph.ir import Initializer, lazy

BLOCK = mxfp4.BLOCK


def _to_int(blocks: np.ndarray, scales: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 -> symmetric ints q [..., K] (int8) and float32 scales [..., K/32]:
    8 bit lossless (q = 2·E2M1, scale 2^(s-128)), 4 bit lossy (scale max|w|/7, q in [-7, 7])."""
    return mxfp4.to_int8_blocks(blocks, scales) if bits == 8 else mxfp4.to_int4_blocks(blocks, scales)


# ---- packing for ONNX Runtime -------------------------------------------------------------------
def _pack_u4(q: np.ndarray) -> np.ndarray:
    """int [-8, 7] [..., K] -> uint8 [..., K/2]: (q+8), element 2j in the low nibble."""
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def _per_expert(blocks: Initializer, scales: Initializer):
    for b, s in zip(blocks.chunks(), scales.chunks()):
        yield b, s


def float_experts(name: str, blocks: Initializer, scales: Initializer) -> Initializer:
    e, n, nb, _ = blocks.shape
    return lazy(name, np.float32, [e, n, nb * BLOCK],
                lambda: (mxfp4.decode(b, s) for b, s in _per_expert(blocks, scales)), source=blocks.source)


def _paired(convert, source_chunks):
    """Two lazy outputs (packed weights, scales) of one conversion pass: the writer streams the
    weights first, which stashes the (small) scales for the second; if the scales are asked
    for first or alone, the conversion runs again. Peak: one chunk plus all scales."""
    stash: list[np.ndarray] = []

    def weights():
        stash.clear()
        for chunk in source_chunks():
            packed, scales = convert(chunk)
            stash.append(scales)
            yield packed

    def scales():
        if stash:
            yield from stash
            stash.clear()
        else:
            yield from (convert(c)[1] for c in source_chunks())
    return weights, scales


def int_experts(name: str, blocks: Initializer, scales: Initializer, bits: int) -> tuple[Initializer, Initializer]:
    e, n, nb, _ = blocks.shape
    k = nb * BLOCK

    def convert(pair):
        q, s = _to_int(pair[0], pair[1], bits)
        return ((q.astype(np.int16) + 128).astype(np.uint8) if bits == 8 else _pack_u4(q)), s
    weights, qscales = _paired(convert, lambda: _per_expert(blocks, scales))
    w_shape = [e, n, k if bits == 8 else k // 2]
    return (lazy(f"{name}_weight_q{bits}", np.uint8, w_shape, weights, source=blocks.source),
            lazy(f"{name}_scales_q{bits}", np.float32, [e, n, nb], qscales, source=scales.source))


def bf16_table(name: str, table: Initializer) -> Initializer:
    """The table in bfloat16, chunk by chunk; refuses a value that bf16 cannot hold exactly."""
    def produce():
        for chunk in table.chunks():
            b = chunk.astype(ml_dtypes.bfloat16)
            if not np.array_equal(b.astype(np.float32), chunk):
                raise ValueError(f"{table.source or table.name}: not exactly representable in bfloat16 "
                                 "(the checkpoint does not store it as bf16); compile with --embedding float")
            yield b
    return lazy(name, ml_dtypes.bfloat16, table.shape, produce, source=table.source)


def dequant_int(q_packed: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of the ONNX Runtime storage above (tests, error measurement)."""
    if bits == 8:
        q = q_packed.astype(np.int16) - 128
    else:
        q = mxfp4.unpack_nibbles(q_packed.reshape(*q_packed.shape[:-1], -1, 16)).astype(np.int16) - 8
    return mxfp4.dequantize_blocks(q.reshape(*q_packed.shape[:-1], -1), scales)
