// MoeMxfp4 launchers (C ABI). Semantics: compiler/opset.py MOE_MXFP4 (gpt-oss MLP block).
//
// Shapes (row-major, contiguous, device pointers; T = dtype's activation type):
//   hidden         [tokens, H]                 T
//   new_len        [batch] int32 or null       tokens = batch rows of S = tokens / batch; token
//                                              b*S + s is padded when s >= new_len[b]: not routed,
//                                              output row 0 (null: every token is real)
//   router_weight  [E, H] fp32, router_bias [E] fp32
//   gate_up_blocks [E, 2I, H/32, 16] uint8     (MXFP4: byte j = elements 2j low, 2j+1 high nibble)
//   gate_up_scales [E, 2I, H/32]     uint8     (E8M0: 2^(s-127)), gate_up_bias [E, 2I] fp32
//                                              rows interleaved: even = gate, odd = linear
//   down_blocks    [E, H, I/32, 16]  uint8,  down_scales [E, H, I/32] uint8, down_bias [E, H] fp32
//   output         [tokens, H]                 T
// Constraints: H % 32 == 0, I % 32 == 0, 1 <= top_k <= min(E, 32), E <= 1024.
// Pipeline: router logits (fp32) -> per-token top-k + softmax over the selected -> grouping of
// (token, k) entries by expert -> gate_up W4 GEMM + bias + clamped SwiGLU (fused) -> down W4
// GEMM + bias -> combine sum_k w_k * y_k. Intermediates are fp32. Tokens are processed in chunks
// of GPE_MOE_CHUNK_TOKENS so the workspace stays bounded.
// Path: GPE_PATH_GEMV reads only the selected experts' bytes once per pass of 8 rows (decode);
// GPE_PATH_TILED runs a grouped tiled GEMM per expert (prefill); AUTO picks GEMV when
// tokens <= GPE_MOE_GEMV_MAX_TOKENS. GPE_PATH_MMA: the grouped GEMM on tensor cores (fp16/bf16,
// SwiGLU outputs rounded to T before the down GEMM; opt-in until validated, see gpe_api.h).
#pragma once
#include "../common/gpe_api.h"

#define GPE_MOE_CHUNK_TOKENS 512
// GEMV up to 64 tokens: it does only the useful FMAs, while a 64-row tile of the tiled path
// holds tokens*k/E rows of an expert (8 of 64 for 20b at 64 tokens: 8x the FMAs, SIMT).
#define GPE_MOE_GEMV_MAX_TOKENS 64

// Bytes of workspace gpe_moe_mxfp4 needs for `tokens` (or fewer) tokens.
GPE_API size_t gpe_moe_mxfp4_workspace_size(int tokens, int num_experts, int top_k, int hidden_size,
    int intermediate_size);

GPE_API int gpe_moe_mxfp4(int dtype, int path, int tokens, int num_experts, int top_k, int hidden_size,
    int intermediate_size, float swiglu_limit, float swiglu_alpha, float swiglu_linear_offset, void const* hidden,
    int batch, int const* new_len, float const* router_weight, float const* router_bias, uint8_t const* gate_up_blocks,
    uint8_t const* gate_up_scales, float const* gate_up_bias, uint8_t const* down_blocks,
    uint8_t const* down_scales, float const* down_bias, void* output, void* workspace, size_t workspace_size,
    void* stream);
