// AVX2 + FMA + F16C kernels (group 2: one 32-byte load = two weight blocks). No std:: templates
// in this file: everything here is compiled for AVX2 and must not leak into portable code.
#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#include "simd_quantize.h"
#include "simd_scales.h"

namespace gek {
namespace {

constexpr int kMaxBlocks = 1024;   // K <= 32768 (checked by the glue)

inline __m256i table(const void* t16) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(t16)));
}

// 32 bytes (two blocks) -> table entries of the low nibbles (evens) and high nibbles (odds).
inline void decode32(const uint8_t* p, __m256i lut, __m256i& wl, __m256i& wh) {
  const __m256i m = _mm256_set1_epi8(0x0f);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  wl = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m));
  wh = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), m));
}

// (w + offset) u8 times x s8, summed in pairs (int16: |sum| <= 2 * 24 * 127, no saturation).
inline __m256i dot16(__m256i wu, __m256i x) { return _mm256_maddubs_epi16(wu, x); }
inline __m256i to32(__m256i s16) { return _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); }

inline __m256 widen(__m128i w8) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w8)); }

// ---- 4-bit rows, int8 activations ----------------------------------------------------------
// (w + offset) . x in int16 pairs, widened to 8 int32 lanes per two blocks (4 lanes per block)
// and offset by Acts::xoff, so each lane's sum is w . x exactly. Loop order as in
// isa_avx512.cpp: a block of rows (scales decoded once), then tiles of tokens over those rows.
constexpr int kTile = 4;        // tokens per pass over a decoded weight row
constexpr int kRowBlock = 16;   // rows per block

// One row against N tokens: y[i * ldy] = row . token i. s1: the row's block scales (one float
// per block); x, xd, xo: each token's activations, block scales (x4) and lane offsets.
template <int N>
void row_tile_i8(const uint8_t* row, const float* s1, int64_t nb, __m256i lut, const int8_t* const* x,
                 const float* const* xd, const int32_t* const* xo, float* y, int64_t ldy) {
  const int64_t ng = nb / 2;
  const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  __m256 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t g = 0; g < ng; ++g) {
    __m256i wl, wh;
    decode32(row + g * 32, lut, wl, wh);
    const __m128 s2 = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s1 + 2 * g)));
    const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s2), spread);
    for (int i = 0; i < N; ++i) {
      const __m256i* xp = reinterpret_cast<const __m256i*>(x[i] + g * 64);
      const __m256i p = _mm256_add_epi16(dot16(wl, _mm256_loadu_si256(xp)), dot16(wh, _mm256_loadu_si256(xp + 1)));
      const __m256i p32 = _mm256_add_epi32(to32(p), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xo[i] + 8 * g)));
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(s, _mm256_loadu_ps(xd[i] + 8 * g)), acc[i]);
    }
  }
  for (int64_t b = ng * 2; b < nb; ++b) {    // tail block (odd nb), G = 1 layout: lanes 0-3 + 4-7 = m
    const __m256i wv = decode16(row + b * 16, _mm256_castsi256_si128(lut));
    for (int i = 0; i < N; ++i) {
      const __m256i init = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xo[i] + 4 * b)));
      const __m256i p = _mm256_add_epi32(to32(dot16(wv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i] + b * 32)))), init);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s1[b] * xd[i][4 * b]), acc[i]);
    }
  }
  for (int i = 0; i < N; ++i) y[int64_t(i) * ldy] = hsum8(acc[i]);
}

void rows_i8(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
             float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  const __m256i lut = table(w.lut->u);
  float s1[kRowBlock * kMaxBlocks];
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    for (int64_t r = rb; r < re; ++r) row_scales_simd<1>(w, r, s1 + (r - rb) * nb);
    for (int t0 = 0; t0 < ntok; t0 += kTile) {
      const int n = ntok - t0 < kTile ? ntok - t0 : kTile;
      const int8_t* x[kTile];
      const float* xd[kTile];
      const int32_t* xo[kTile];
      for (int i = 0; i < n; ++i) {
        const int64_t t = tok[t0 + i];
        x[i] = a.xq + t * K;
        xd[i] = a.xd4 + t * nb * 4;
        xo[i] = a.xoff + t * nb * 4;
      }
      for (int64_t r = rb; r < re; ++r) {
        const uint8_t* row = w.blocks + r * nb * 16;
        const float* s = s1 + (r - rb) * nb;
        float* yr = y + int64_t(t0) * ldy + r;
        switch (n) {
          case 1: row_tile_i8<1>(row, s, nb, lut, x, xd, xo, yr, ldy); break;
          case 2: row_tile_i8<2>(row, s, nb, lut, x, xd, xo, yr, ldy); break;
          case 3: row_tile_i8<3>(row, s, nb, lut, x, xd, xo, yr, ldy); break;
          default: row_tile_i8<kTile>(row, s, nb, lut, x, xd, xo, yr, ldy); break;
        }
      }
    }
  }
}

void rows_f32(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
              float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32, ng = nb / 2;
  const __m256i lut = table(w.lut->v);
  float sc[4 * kMaxBlocks];
  for (int64_t r = r0; r < r1; ++r) {
    row_scales_simd<4>(w, r, sc);
    const uint8_t* row = w.blocks + r * nb * 16;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      const float* x[4];
      __m256 acc[4];
      for (int i = 0; i < n; ++i) {
        x[i] = a.xf + int64_t(tok[t0 + i]) * K;
        acc[i] = _mm256_setzero_ps();
      }
      // Block b's 32 weights as 4 x 8 floats w0..w3 against x at xe (evens) and xo (odds).
      auto block = [&](__m128i ev, __m128i od, float* s4, int64_t xe, int64_t xo) {
        const __m256 w0 = widen(ev), w1 = widen(_mm_srli_si128(ev, 8));
        const __m256 w2 = widen(od), w3 = widen(_mm_srli_si128(od, 8));
        const __m256 s = _mm256_broadcast_ss(s4);
        for (int i = 0; i < n; ++i) {
          const float* xp = x[i];
          __m256 p = _mm256_mul_ps(_mm256_loadu_ps(xp + xe), w0);
          p = _mm256_fmadd_ps(_mm256_loadu_ps(xp + xe + 8), w1, p);
          p = _mm256_fmadd_ps(_mm256_loadu_ps(xp + xo), w2, p);
          p = _mm256_fmadd_ps(_mm256_loadu_ps(xp + xo + 8), w3, p);
          acc[i] = _mm256_fmadd_ps(p, s, acc[i]);
        }
      };
      for (int64_t g = 0; g < ng; ++g) {
        __m256i wl, wh;
        decode32(row + g * 32, lut, wl, wh);
        block(_mm256_castsi256_si128(wl), _mm256_castsi256_si128(wh), sc + 8 * g, g * 64, g * 64 + 32);
        block(_mm256_extracti128_si256(wl, 1), _mm256_extracti128_si256(wh, 1), sc + 8 * g + 4, g * 64 + 16,
              g * 64 + 48);
      }
      for (int64_t b = ng * 2; b < nb; ++b) {
        const __m256i wv = decode16(row + b * 16, _mm256_castsi256_si128(lut));
        block(_mm256_castsi256_si128(wv), _mm256_extracti128_si256(wv, 1), sc + 4 * b, b * 32, b * 32 + 16);
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = hsum8(acc[i]);
    }
  }
}

// ---- 8-bit rows (kernels.h Rows8): one block = one 32-byte load --------------------------------

void rows8_f32(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
               float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* row = w.q + r * K;
    const uint16_t* dr = w.d + r * nb;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      const float* x[4];
      __m256 acc[4];
      for (int i = 0; i < n; ++i) {
        x[i] = a.xf + int64_t(tok[t0 + i]) * K;
        acc[i] = _mm256_setzero_ps();
      }
      for (int64_t b = 0; b < nb; ++b) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(dr[b]));
        const int8_t* q = row + b * 32;
        __m256 wf[4];                                     // q * d: exact in float32
        for (int j = 0; j < 4; ++j)
          wf[j] = _mm256_mul_ps(widen(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * j))), d);
        for (int i = 0; i < n; ++i) {
          const float* xp = x[i] + b * 32;
          for (int j = 0; j < 4; ++j) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 8 * j), wf[j], acc[i]);
        }
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = hsum8(acc[i]);
    }
  }
}

// |q| u8 times (x with q's sign) s8, summed in pairs: |sum| <= 2 * 127 * 127 < 2^15, no saturation.
inline __m256i dot8(__m256i q, __m256i x) {
  return to32(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q)));
}

// Loop order as rows_i8: a block of rows (scales decoded once), then tiles of tokens over them.

// One 8-bit row against N tokens: y[i * ldy] = row . token i; s1: the row's block scales.
template <int N>
void row8_tile_i8(const int8_t* row, const float* s1, int64_t nb, const int8_t* const* x,
                  const float* const* xd8, float* y, int64_t ldy) {
  __m256 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * 32));
    for (int i = 0; i < N; ++i) {
      const __m256i p = dot8(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i] + b * 32)));
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s1[b] * xd8[i][8 * b]), acc[i]);
    }
  }
  for (int i = 0; i < N; ++i) y[int64_t(i) * ldy] = hsum8(acc[i]);
}

void rows8_i8(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
              float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  float s1[kRowBlock * kMaxBlocks];
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    for (int64_t r = rb; r < re; ++r)
      for (int64_t b = 0; b < nb; ++b) s1[(r - rb) * nb + b] = _cvtsh_ss(w.d[r * nb + b]);
    for (int t0 = 0; t0 < ntok; t0 += kTile) {
      const int n = ntok - t0 < kTile ? ntok - t0 : kTile;
      const int8_t* x[kTile];
      const float* xd8[kTile];
      for (int i = 0; i < n; ++i) {
        x[i] = a.xq + int64_t(tok[t0 + i]) * K;
        xd8[i] = a.xd8 + int64_t(tok[t0 + i]) * nb * 8;
      }
      for (int64_t r = rb; r < re; ++r) {
        const int8_t* row = w.q + r * K;
        const float* s = s1 + (r - rb) * nb;
        float* yr = y + int64_t(t0) * ldy + r;
        switch (n) {
          case 1: row8_tile_i8<1>(row, s, nb, x, xd8, yr, ldy); break;
          case 2: row8_tile_i8<2>(row, s, nb, x, xd8, yr, ldy); break;
          case 3: row8_tile_i8<3>(row, s, nb, x, xd8, yr, ldy); break;
          default: row8_tile_i8<kTile>(row, s, nb, x, xd8, yr, ldy); break;
        }
      }
    }
  }
}

void quantize(const float* x, int64_t T, int64_t nb, int offset, int8_t* q, float* d4, int32_t* xoff) {
  quantize_i8_laid(x, T, nb, 2, offset, q, d4, xoff);
}

}  // namespace
}  // namespace gek

#pragma GCC pop_options

namespace gek {
const Isa* isa_avx2() {   // compiled for the baseline: safe to call on any x86-64
  static const Isa isa{"avx2", 2, rows_f32, rows_i8, rows8_f32, rows8_i8, quantize, quantize_i8_natural_simd};
  const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok ? &isa : nullptr;
}
}  // namespace gek
#endif
