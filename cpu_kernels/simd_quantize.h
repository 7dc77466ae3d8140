// x86 int8 activation quantization (kernels.h: per block of 32, d = amax / 127 in float32,
// q = x / d rounded half to even). AVX2 instructions, included AFTER isa_avx2.cpp's and
// isa_avx512.cpp's target pragma. Bit-identical to common.cpp's scalar quantize_block: the
// float32 division is IEEE-exact in both, and cvtps2dq rounds half to even under the default
// MXCSR as nearbyint does under the default rounding mode.
#pragma once
#include <immintrin.h>

#include "kernels.h"

namespace gek {
namespace {

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// One block of 32: q in natural order (32 bytes), and the int32 sums of its four runs of 8
// (lanes m = 0..3). Returns d.
inline float quantize_block32(const float* x, __m256i& q, __m128i& run_sums) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) {
    v[j] = _mm256_loadu_ps(x + 8 * j);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[j]));
  }
  const float d = hmax8(amax) / 127.f;
  __m256i i[4];
  for (int j = 0; j < 4; ++j)
    i[j] = d > 0.f ? _mm256_cvtps_epi32(_mm256_div_ps(v[j], _mm256_set1_ps(d))) : _mm256_setzero_si256();
  // [i0 q0, i1 q0, i2 q0, i3 q0 | i0 q1, ...] (q0/q1: pair sums of each 128-bit half) -> runs.
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(i[0], i[1]), _mm256_hadd_epi32(i[2], i[3]));
  run_sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  // packs interleave per 128-bit lane: dwords [i0 0-3, i1 0-3, i2 0-3, i3 0-3 | i0 4-7, ...].
  const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  q = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  return d;
}

// T tokens for the 4-bit kernels' layout of `group` (kernels.h): q [T, K], d4 [T, nb * 4],
// xoff [T, nb * 4] (Acts::xoff).
inline void quantize_i8_laid(const float* x, int64_t T, int64_t nb, int group, int offset, int8_t* q,
                             float* d4, int32_t* xoff) {
  const int64_t K = nb * 32, full = nb / group * group;
  // per 128-bit lane: the 8 even bytes, then the 8 odd bytes
  const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                         0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const __m128i neg_offset = _mm_set1_epi32(-offset);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      __m256i qb;
      __m128i runs;
      const float d = quantize_block32(x + t * K + b * 32, qb, runs);
      const __m256i eo = _mm256_shuffle_epi8(qb, split);
      const __m128i lo = _mm256_castsi256_si128(eo), hi = _mm256_extracti128_si256(eo, 1);
      int8_t* even;
      int8_t* odd;
      if (b < full) {
        const int64_t j = b % group;
        even = q + t * K + (b - j) * 32 + j * 16;
        odd = even + 16 * group;
      } else {
        even = q + t * K + b * 32;
        odd = even + 16;
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(even), _mm_unpacklo_epi64(lo, hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(odd), _mm_unpackhi_epi64(lo, hi));
      _mm_storeu_ps(d4 + (t * nb + b) * 4, _mm_set1_ps(d));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xoff + (t * nb + b) * 4), _mm_mullo_epi32(runs, neg_offset));
    }
  }
}

// Natural order for the 8-bit kernels (Acts8): q [T, K], d8 [T, nb * 8].
inline void quantize_i8_natural_simd(const float* x, int64_t T, int64_t nb, int8_t* q, float* d8) {
  for (int64_t i = 0; i < T * nb; ++i) {
    __m256i qb;
    __m128i runs;
    const float d = quantize_block32(x + i * 32, qb, runs);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * 32), qb);
    _mm256_storeu_ps(d8 + i * 8, _mm256_set1_ps(d));
  }
}

}  // namespace
}  // namespace gek
