// Gemm4bit launcher (C ABI). Semantics: compiler/opset.py GEMM_4BIT (dense W4A16).
//
//   input   [M, K] T          (M = product of the leading dims)
//   blocks  [N, K/32, 16] uint8: byte j of block b of row n = inputs 32b+2j (low), 32b+2j+1 (high)
//   scales  [N, K/32]  uint8 E8M0 (format GPE_W4_MXFP4, nibble = E2M1)
//                      or fp16   (format GPE_W4_INT4, nibble = q + 8, w = q * scale)
//   bias    [N] fp32 or null
//   output  [M, N] T,  y = x @ W^T + bias, fp32 accumulation.
// Constraints: K % 32 == 0, N >= 1. Path AUTO: GEMV (warp per output-row pair, 128-bit weight
// loads) when M <= GPE_GEMM4BIT_GEMV_MAX_ROWS, else the tiled SIMT kernel; GPE_PATH_MMA runs
// the tiled GEMM on tensor cores (fp16/bf16 with mxfp4; opt-in, see gpe_api.h): fp32 nodes and
// int4 weights get GPE_ERR_UNSUPPORTED there (int4 x fp16 scale is not exact in an MMA operand).
// No workspace.
#pragma once
#include "../common/gpe_api.h"

#define GPE_GEMM4BIT_GEMV_MAX_ROWS 16

GPE_API int gpe_gemm_4bit(int dtype, int format, int path, int64_t rows, int in_features, int out_features,
    void const* input, uint8_t const* weight_blocks, void const* weight_scales, float const* bias, void* output,
    void* stream);
