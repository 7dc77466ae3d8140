// x86 block-scale decoding shared by isa_avx2.cpp and isa_avx512.cpp: included AFTER their
// target pragma so it compiles for each file's ISA (static: no cross-ISA symbol sharing).
#pragma once
#include <immintrin.h>

#include "kernels.h"

namespace gek {
namespace {

// 8 E8M0 bytes -> 2^(s-128) as float bits: (s-1) << 23 for s >= 2 (normal numbers); s = 0, 1
// are the denormals 2^-128 = 0x00200000, 2^-127 = 0x00400000 = 0x00200000 << s.
inline __m256 e8m0x8(const uint8_t* s) {
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)));
  const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(v, _mm256_set1_epi32(1)), 23);
  const __m256i denormal = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), v);
  const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), v);
  return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, denormal, small));
}

inline __m256 f16x8(const uint8_t* s) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
}

// The block scales of row `row` as float, each written R times: out[R b .. R b + R-1]
// (R = 4: the 4-lane-per-block layout of kernels.h; R = 1: one per block).
template <int R>
inline void row_scales_simd(const Rows& w, int64_t row, float* out) {
  static_assert(R == 1 || R == 4, "scales are written once or 4 times");
  const int64_t nb = w.nb;
  const bool e8 = w.kind == ScaleKind::E8M0;
  const uint8_t* s = static_cast<const uint8_t*>(w.scales) + row * nb * (e8 ? 1 : 2);
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const __m256 f = e8 ? e8m0x8(s + b) : f16x8(s + 2 * b);
    if (R == 1) {
      _mm256_storeu_ps(out + b, f);
      continue;
    }
    for (int q = 0; q < 4; ++q) {
      const __m256i idx = _mm256_setr_epi32(2 * q, 2 * q, 2 * q, 2 * q, 2 * q + 1, 2 * q + 1, 2 * q + 1, 2 * q + 1);
      _mm256_storeu_ps(out + 4 * (b + 2 * q), _mm256_permutevar8x32_ps(f, idx));
    }
  }
  for (; b < nb; ++b) {
    const float v = e8 ? e8m0_scale(s[b]) : half_to_float(reinterpret_cast<const uint16_t*>(s)[b]);
    for (int j = 0; j < R; ++j) out[R * b + j] = v;
  }
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 bytes of 4-bit codes -> their table entries [low nibbles (evens) | high nibbles (odds)].
inline __m256i decode16(const uint8_t* p, __m128i table) {
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_set_m128i(_mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(v, 4), m)),
                          _mm_shuffle_epi8(table, _mm_and_si128(v, m)));
}

}  // namespace
}  // namespace gek
