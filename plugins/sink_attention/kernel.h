// SinkAttention launchers (C ABI). Semantics: compiler/opset.py SINK_ATTENTION.
//
//   query  [B, S, H*D] T      key/value [B, S, KVH*D] T     (before RoPE; s < new_len[b] valid)
//   sinks  [H] fp32           rope_cos/rope_sin [P, D/2] fp32 (row = position, half-split RoPE)
//   past_key/past_value   [B, KVH, C, D] T   RoPE'd keys / values; window == 0: slot = position,
//   present_key/value     [B, KVH, C, D] T   window > 0: slot = position % window (ring, C >= window)
//   past_len/new_len [B] int32; row b's token s sits at position past_len[b] + s
//   output [B, S, H*D] T; padded rows (s >= new_len[b]) are zeros.
// present_* may alias past_* (TensorRT in-place); otherwise past_* is copied first.
// Steps: RoPE new keys (workspace, in T) -> attention (online softmax over key chunks, all GQA
// heads of one kv head per block, optional split over keys for few query rows) -> split merge
// with the sink -> new K/V written to the cache (after attention, so a prefill longer than the
// ring never overwrites keys an earlier query still needs; for a ring only the last `window`
// tokens are written).
// A position >= P (outside the RoPE tables) yields NaN outputs rather than a silent clamp.
// Constraints: D in {16, 32, 64, 128}, H % KVH == 0, H / KVH <= 16, window >= 0.
#pragma once
#include "../common/gpe_api.h"

// num_splits: 0 = automatic (by B*S*KVH); > 0 forces a split count (tests), at most 64.
GPE_API size_t gpe_sink_attention_workspace_size(int batch, int seq, int num_heads, int num_kv_heads, int head_dim,
    int num_splits);

GPE_API int gpe_sink_attention(int dtype, int batch, int seq, int num_heads, int num_kv_heads, int head_dim,
    int cache_capacity, int window, float scale, int max_positions, int num_splits, void const* query,
    void const* key, void const* value, float const* sinks, float const* rope_cos, float const* rope_sin,
    void const* past_key, void const* past_value, int32_t const* past_len, int32_t const* new_len, void* output,
    void* present_key, void* present_value, void* workspace, size_t workspace_size, void* stream);
