// The op set's SinkAttention on the CPU for full-attention layers (window 0): RoPE from the
// given tables (half split), grouped-query attention, a learned sink logit per head in the
// softmax denominator, the KV cache updated at slots past_len .. past_len + new_len - 1.
// Sliding-window layers stay on ONNX Runtime's GroupQueryAttention (compiler/lower_ort.py): the
// CPU engine keeps their cache in that op's compacted layout, not the op set's ring.
//
// Shapes (float32): query [B, S, H*D], key/value [B, S, Hkv*D], sinks [H], rope_cos/sin
// [P, D/2], past/present key/value [B, Hkv, C, D] (slot p = position p), past_len/new_len [B].
// present may be the same memory as past (bound in place): only new slots are written.
#pragma once
#include <cstdint>
#include <string>

#include "compute.h"

namespace gek {

constexpr int64_t kMaxHeadDim = 1024;

struct AttnShape {
  int64_t heads, kv_heads, head_dim;
  float scale;
};

struct AttnArgs {
  int64_t batch, seq, capacity, positions;   // B, S, C, P
  const float* query;
  const float* key;
  const float* value;
  const float* sinks;
  const float* rope_cos;
  const float* rope_sin;
  const float* past_key;
  const float* past_value;
  const int32_t* past_len;
  const int32_t* new_len;
  float* out;
  float* present_key;
  float* present_value;
};

// "" when every row's lengths fit the cache and the tables, else one line naming the row.
std::string check_attention_lengths(const AttnArgs& a);

// Padded query rows (s >= new_len[b]) get zeros. Work: tasks of (row, kv head, query chunk).
void sink_attention(const Engine& eng, const AttnShape& s, const AttnArgs& a);

}  // namespace gek
