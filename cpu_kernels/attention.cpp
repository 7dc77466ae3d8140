// SinkAttention for full-attention layers (attention.h). Two phases on the pool:
//   1. per (row, kv head): present = past where they are different memory, then the new
//      tokens' RoPE'd keys and values written at their slots (position = slot);
//   2. per (row, kv head, chunk of 16 queries): for each query (or tile of two), the scores of
//      its group's query heads against keys 0 .. position (each key row read once for the
//      whole group: the heads are the vector lanes), the softmax with the sink in the
//      denominator, and the weighted sum of the value rows.
// The loops are plain C++ compiled once per x86 level (target_clones: AVX-512, AVX2+FMA,
// baseline) and picked when the library loads. Vector lanes are heads or head dims, never a
// reordered sum; the levels with FMA contract a*b+c (one rounding instead of two).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

namespace gek {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(GEK_NO_CLONES)   // tests build one level each
#define GEK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GEK_CLONES
#endif
#define GEK_INLINE inline __attribute__((always_inline))

constexpr int64_t kQueryChunk = 16;   // queries per task in a prefill

// x [D] rotated at one position: half split, x1 = x[:D/2], x2 = x[D/2:].
GEK_INLINE void rope(const float* x, const float* cos, const float* sin, int64_t half, float* out) {
  for (int64_t i = 0; i < half; ++i) {
    out[i] = x[i] * cos[i] - x[i + half] * sin[i];
    out[i + half] = x[i + half] * cos[i] + x[i] * sin[i];
  }
}

// Phase 1 for row b, kv head g.
GEK_CLONES void write_new(const AttnShape& s, const AttnArgs& a, int64_t b, int64_t g) {
  const int64_t D = s.head_dim, C = a.capacity, Hkv = s.kv_heads;
  const size_t cache = size_t((b * Hkv + g) * C * D);
  float* pk = a.present_key + cache;
  float* pv = a.present_value + cache;
  if (pk != a.past_key + cache) std::memcpy(pk, a.past_key + cache, size_t(C * D) * sizeof(float));
  if (pv != a.past_value + cache) std::memcpy(pv, a.past_value + cache, size_t(C * D) * sizeof(float));
  const int64_t p0 = a.past_len[b], n = a.new_len[b];
  for (int64_t t = 0; t < n; ++t) {
    const int64_t p = p0 + t;
    const size_t src = size_t((b * a.seq + t) * Hkv * D + g * D);
    rope(a.key + src, a.rope_cos + p * (D / 2), a.rope_sin + p * (D / 2), D / 2, pk + p * D);
    std::memcpy(pv + p * D, a.value + src, size_t(D) * sizeof(float));
  }
}

// 8 and 16 float lanes (GCC/Clang vector extensions: whatever registers the clone's target
// has - AVX-512, AVX, SSE pairs, NEON), loaded and stored unaligned.
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
template <class V>
GEK_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
GEK_INLINE void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }

// e^x for x <= 0 (softmax arguments): x = n ln2 + r with n the nearest integer (the 1.5 * 2^23
// rounding trick), e^r by the Cephes polynomial (relative error ~2e-7), 2^n through the
// exponent bits. x < -87 gives e^-87 = 1.6e-38, negligible next to the maximum's e^0 = 1 that
// every softmax sum holds.
template <class VEC>
GEK_INLINE VEC exp_neg(VEC x) {
  using VI = decltype(x < x);                // the matching int32 lanes
  x = x < -87.f ? VEC{} - 87.f : x;
  const VEC t = x * 1.44269504f + 12582912.f;
  const VEC n = t - 12582912.f;
  const VEC r = x - n * 0.693359375f + n * 2.12194440e-4f;
  VEC p = VEC{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const VI two_n = (reinterpret_cast<const VI&>(t) - 0x4B400000 + 127) << 23;
  return (p * r * r + r + 1.f) * reinterpret_cast<const VEC&>(two_n);
}

// Phase 2 for row b, kv head g, queries t .. t+TQ-1 of the row's new tokens. Lanes are
// (query, head) rows r = qi * G + h of the tile (NV vectors of type VEC, 8 or 16 floats; padded
// lanes hold zeros), so each key row is read once for all of them; head dims are the lanes of
// the value sums (DV vectors of 8 kept in registers when DV > 0, the usual head sizes; DV = 0:
// any size that is a multiple of 4, from memory). A row's sums run in the same order whatever
// the tile: scores over the D products in 8 interleaved partial sums (2 keys x 4); keys after a
// query's own position (the tile's later ones) get exactly zero weight.
template <class VEC, int NV, int DV, int TQ>
GEK_INLINE void attend_tile(const AttnShape& s, const AttnArgs& a, int64_t b, int64_t g, int64_t t, float* w) {
  constexpr int W = int(sizeof(VEC) / sizeof(float));
  constexpr int64_t GP = W * NV;
  const int64_t D = DV ? 8 * DV : s.head_dim, H = s.heads, Hkv = s.kv_heads, G = H / Hkv, C = a.capacity;
  const int64_t R = TQ * G;                 // rows: TQ queries x G heads <= GP
  const size_t cache = size_t((b * Hkv + g) * C * D);
  const float* K = a.present_key + cache;
  const float* V = a.present_value + cache;
  const int64_t p = a.past_len[b] + t;      // the tile's first position
  const int64_t Lv = p + 1, L = p + TQ;     // keys all rows see; keys of the last row
  // [D, GP] rotated, scaled queries: on the stack for the register paths (D <= 64; a heap
  // buffer passed in measured ~15% slower at 4k-context decode), else on the heap
  float qt[64 * GP];
  std::vector<float> qheap(DV ? 0 : size_t(D * GP));
  float* q = DV ? qt : qheap.data();
  float rq[kMaxHeadDim], sink[GP] = {}, zs[GP], visible[TQ > 1 ? TQ - 1 : 1][GP];
  std::fill(q, q + D * GP, 0.f);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t qi = r / G, h = r % G, pq = p + qi;
    rope(a.query + size_t((b * a.seq + t + qi) * H * D + (g * G + h) * D), a.rope_cos + pq * (D / 2),
         a.rope_sin + pq * (D / 2), D / 2, rq);
    for (int64_t d = 0; d < D; ++d) q[d * GP + r] = rq[d] * s.scale;
    sink[r] = a.sinks[g * G + h];
  }
  for (int j = 0; j + 1 < TQ; ++j)          // key Lv + j: seen by the rows of queries > j
    for (int64_t r = 0; r < GP; ++r) visible[j][r] = r / G > j ? 1.f : 0.f;
  VEC m[NV], z[NV];
  for (int v = 0; v < NV; ++v) m[v] = load<VEC>(sink + W * v);
  for (int64_t k = 0; k < L; k += 2) {      // w [L, GP]: scores, two keys per pass
    const float* k0 = K + k * D;
    const float* k1 = k + 1 < L ? k0 + D : k0;   // an odd tail recomputes key k, unstored
    for (int v = 0; v < NV; ++v) {
      VEC x0[2] = {}, x1[2] = {}, y0[2] = {}, y1[2] = {};
      for (int64_t d = 0; d < D; d += 4)
        for (int j = 0; j < 2; ++j) {
          const VEC q0 = load<VEC>(&q[(d + 2 * j) * GP + W * v]);
          const VEC q1 = load<VEC>(&q[(d + 2 * j + 1) * GP + W * v]);
          x0[j] += k0[d + 2 * j] * q0;
          x1[j] += k0[d + 2 * j + 1] * q1;
          y0[j] += k1[d + 2 * j] * q0;
          y1[j] += k1[d + 2 * j + 1] * q1;
        }
      const VEC s0 = (x0[0] + x1[0]) + (x0[1] + x1[1]), s1 = (y0[0] + y1[0]) + (y0[1] + y1[1]);
      store(&w[k * GP + W * v], s0);
      if (k < Lv) m[v] = s0 > m[v] ? s0 : m[v];
      if (k + 1 < L) store(&w[(k + 1) * GP + W * v], s1);
      if (k + 1 < Lv) m[v] = s1 > m[v] ? s1 : m[v];
    }
  }
  for (int64_t k = Lv; k < L; ++k)          // the tile's later keys: into the max where seen
    for (int v = 0; v < NV; ++v) {
      const VEC seen = load<VEC>(&visible[k - Lv][W * v]), sc = load<VEC>(&w[k * GP + W * v]);
      m[v] = ((seen > 0.f) & (sc > m[v])) ? sc : m[v];
    }
  for (int v = 0; v < NV; ++v) z[v] = exp_neg(load<VEC>(sink + W * v) - m[v]);   // the sink's share
  for (int64_t k = 0; k < L; ++k)
    for (int v = 0; v < NV; ++v) {
      VEC e = exp_neg(load<VEC>(&w[k * GP + W * v]) - m[v]);
      if (k >= Lv) e *= load<VEC>(&visible[k - Lv][W * v]);   // exactly 0 where not seen
      store(&w[k * GP + W * v], e);
      z[v] += e;
    }
  for (int v = 0; v < NV; ++v) store(zs + W * v, z[v]);
  auto out_row = [&](int64_t r) { return a.out + size_t((b * a.seq + t + r / G) * H * D + (g * G + r % G) * D); };
  if constexpr (DV > 0) {
    constexpr int DW = DV / 2;              // 16-float vectors per row
    for (int64_t r = 0; r < R; r += 2) {    // o[r] = sum_k w[k, r] V[k] / z[r], two rows per pass
      const int64_t r1 = r + 1 < R ? r + 1 : r;
      v16f a0[DW] = {}, a1[DW] = {};
      for (int64_t k = 0; k < L; ++k) {
        const float w0 = w[k * GP + r], w1 = w[k * GP + r1];
        for (int j = 0; j < DW; ++j) {
          const v16f vk = load<v16f>(V + k * D + 16 * j);
          a0[j] += w0 * vk;
          a1[j] += w1 * vk;
        }
      }
      for (int j = 0; j < DW; ++j) {
        store(out_row(r) + 16 * j, a0[j] / zs[r]);
        store(out_row(r1) + 16 * j, a1[j] / zs[r1]);
      }
    }
  } else {
    for (int64_t r = 0; r < R; ++r) {
      float* o = out_row(r);
      std::fill(o, o + D, 0.f);
      for (int64_t k = 0; k < L; ++k) {
        const float wk = w[k * GP + r];
        for (int64_t d = 0; d < D; ++d) o[d] += wk * V[k * D + d];
      }
      for (int64_t d = 0; d < D; ++d) o[d] /= zs[r];
    }
  }
}

// Queries [t0, t1): tiles of two where 2 x G fills 16 lanes (G = 8, gpt-oss: halves the score
// work on 16-lane targets), one at a time otherwise and for an odd last query.
template <int DV>
GEK_INLINE void attend_d(const AttnShape& s, const AttnArgs& a, int64_t b, int64_t g, int64_t t0, int64_t t1) {
  const int64_t G = s.heads / s.kv_heads, lanes = G <= 8 ? (G == 8 ? 16 : 8) : G <= 16 ? 16 : 64;
  // scores / weights [keys, lanes]: every entry read is written first (no zero fill: at 4k
  // context a zeroed buffer would cost as much memory traffic as a third of the keys)
  const std::unique_ptr<float[]> w(new float[size_t((a.past_len[b] + t1 + 1) * lanes)]);
  int64_t t = t0;
  if (G == 8)
    for (; t + 2 <= t1; t += 2) attend_tile<v16f, 1, DV, 2>(s, a, b, g, t, w.get());
  for (; t < t1; ++t) {
    if (G <= 8) attend_tile<v8f, 1, DV, 1>(s, a, b, g, t, w.get());
    else if (G <= 16) attend_tile<v8f, 2, DV, 1>(s, a, b, g, t, w.get());
    else attend_tile<v8f, 8, DV, 1>(s, a, b, g, t, w.get());
  }
}

GEK_CLONES void attend(const AttnShape& s, const AttnArgs& a, int64_t b, int64_t g, int64_t t0, int64_t t1) {
  if (s.head_dim == 64) return attend_d<8>(s, a, b, g, t0, t1);
  if (s.head_dim == 32) return attend_d<4>(s, a, b, g, t0, t1);
  return attend_d<0>(s, a, b, g, t0, t1);   // any multiple of 4 (checked at kernel creation)
}

}  // namespace

std::string check_attention_lengths(const AttnArgs& a) {
  for (int64_t b = 0; b < a.batch; ++b) {
    const int64_t p0 = a.past_len[b], n = a.new_len[b];
    const std::string row = "SinkAttention: row " + std::to_string(b) + " has past_len=" + std::to_string(p0) +
                            ", new_len=" + std::to_string(n);
    if (p0 < 0 || n < 0 || n > a.seq) return row + " with seq=" + std::to_string(a.seq);
    if (n && p0 + n > a.capacity) return row + ": needs " + std::to_string(p0 + n) + " cache slots, the cache has " +
                                         std::to_string(a.capacity);
    if (n && p0 + n > a.positions) return row + ": reaches position " + std::to_string(p0 + n - 1) +
                                          ", the RoPE tables hold " + std::to_string(a.positions);
  }
  return "";
}

void sink_attention(const Engine& eng, const AttnShape& s, const AttnArgs& a) {
  const int64_t B = a.batch, S = a.seq, Hkv = s.kv_heads, HD = s.heads * s.head_dim;
  for (int64_t b = 0; b < B; ++b)                   // padded queries: zeros
    std::memset(a.out + (b * S + a.new_len[b]) * HD, 0, size_t((S - a.new_len[b]) * HD) * sizeof(float));
  parallel(eng, B * Hkv, 1, [&](int64_t i) { write_new(s, a, i / Hkv, i % Hkv); });
  struct Item {
    int64_t b, g, t0;                               // row, kv head, first query of the chunk
  };
  std::vector<Item> items;                          // rows without new tokens have none
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < Hkv; ++g)
      for (int64_t t0 = 0; t0 < a.new_len[b]; t0 += kQueryChunk) items.push_back({b, g, t0});
  parallel(eng, int64_t(items.size()), 1, [&](int64_t i) {
    const Item& it = items[size_t(i)];
    attend(s, a, it.b, it.g, it.t0, std::min<int64_t>(it.t0 + kQueryChunk, a.new_len[it.b]));
  });
}

}  // namespace gek
