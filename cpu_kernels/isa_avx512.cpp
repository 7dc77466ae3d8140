// AVX-512 (F, BW, VL, DQ) + VNNI kernels (group 4: one 64-byte load = four weight blocks). As
// in isa_avx2.cpp, no std:: templates are compiled under the target pragma.
#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

#include "simd_quantize.h"
#include "simd_scales.h"

namespace gek {
namespace {

constexpr int kMaxBlocks = 1024;

inline __m128i table16(const void* t) { return _mm_loadu_si128(static_cast<const __m128i*>(t)); }

// 64 bytes (four blocks) -> table entries of the low nibbles (evens) and high nibbles (odds).
inline void decode64(const uint8_t* p, __m512i lut, __m512i& wl, __m512i& wh) {
  const __m512i m = _mm512_set1_epi8(0x0f);
  const __m512i v = _mm512_loadu_si512(p);
  wl = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m));
  wh = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), m));
}

inline __m512 widen(__m128i w8) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(w8)); }

inline __m128i lane(__m512i v, int j) {
  switch (j) {
    case 0: return _mm512_castsi512_si128(v);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
  }
}

inline float hsum(__m512 v, __m256 t) {
  return hsum8(_mm256_add_ps(t, _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1))));
}

// ---- 4-bit rows, int8 activations ----------------------------------------------------------
// Unsigned weights (w + offset) dotted with int8 activations by VNNI (4 products per int32
// lane, 4 lanes per block); each lane starts from Acts::xoff, so its int32 sum is w . x exactly.
// Loop order: a block of rows has its scales decoded once, then each tile of tokens runs over
// those rows: the tile's activations (kTile x K bytes) and the rows' weights stay in L1, where
// a row-outer order streamed every token's activations from L2 once per row.
constexpr int kTile = 4;        // tokens per pass over a decoded weight row
constexpr int kRowBlock = 16;   // rows per block

// One row against N tokens: y[i * ldy] = row . token i. s1: the row's block scales (one float
// per block); x, xd, xo: each token's activations, block scales (x4) and lane offsets.
template <int N>
void row_tile_i8(const uint8_t* row, const float* s1, int64_t nb, __m512i lut, const int8_t* const* x,
                 const float* const* xd, const int32_t* const* xo, float* y, int64_t ldy) {
  const int64_t ng = nb / 4;
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc[N];
  __m256 tail[N];
  for (int i = 0; i < N; ++i) {
    acc[i] = _mm512_setzero_ps();
    tail[i] = _mm256_setzero_ps();
  }
  for (int64_t g = 0; g < ng; ++g) {
    __m512i wl, wh;
    decode64(row + g * 64, lut, wl, wh);
    const __m512 s = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_loadu_ps(s1 + 4 * g)));
    for (int i = 0; i < N; ++i) {
      const int8_t* xp = x[i] + g * 128;
      __m512i p = _mm512_dpbusd_epi32(_mm512_loadu_si512(xo[i] + 16 * g), wl, _mm512_loadu_si512(xp));
      p = _mm512_dpbusd_epi32(p, wh, _mm512_loadu_si512(xp + 64));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(s, _mm512_loadu_ps(xd[i] + 16 * g)), acc[i]);
    }
  }
  for (int64_t b = ng * 4; b < nb; ++b) {    // tail blocks, G = 1 layout: lanes 0-3 + 4-7 = m
    const __m256i wv = decode16(row + b * 16, _mm512_castsi512_si128(lut));
    for (int i = 0; i < N; ++i) {
      const __m256i init = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xo[i] + 4 * b)));
      const __m256i p = _mm256_dpbusd_epi32(init, wv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i] + b * 32)));
      tail[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s1[b] * xd[i][4 * b]), tail[i]);
    }
  }
  for (int i = 0; i < N; ++i) y[int64_t(i) * ldy] = hsum(acc[i], tail[i]);
}

void rows_i8(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
             float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  const __m512i lut = _mm512_broadcast_i32x4(table16(w.lut->u));
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
  const int64_t nb = w.nb, K = nb * 32, ng = nb / 4;
  const __m128i lut16 = table16(w.lut->v);
  const __m512i lut = _mm512_broadcast_i32x4(lut16);
  float sc[4 * kMaxBlocks];
  for (int64_t r = r0; r < r1; ++r) {
    row_scales_simd<4>(w, r, sc);
    const uint8_t* row = w.blocks + r * nb * 16;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      const float* x[4];
      __m512 acc[4];
      for (int i = 0; i < n; ++i) {
        x[i] = a.xf + int64_t(tok[t0 + i]) * K;
        acc[i] = _mm512_setzero_ps();
      }
      // One block: 16 even and 16 odd weights against x at xe and xo.
      auto block = [&](__m128i ev, __m128i od, const float* s4, int64_t xe, int64_t xo) {
        const __m512 we = widen(ev), wo = widen(od);
        const __m512 s = _mm512_set1_ps(*s4);
        for (int i = 0; i < n; ++i) {
          const __m512 p = _mm512_fmadd_ps(_mm512_loadu_ps(x[i] + xo), wo, _mm512_mul_ps(_mm512_loadu_ps(x[i] + xe), we));
          acc[i] = _mm512_fmadd_ps(p, s, acc[i]);
        }
      };
      for (int64_t g = 0; g < ng; ++g) {
        __m512i wl, wh;
        decode64(row + g * 64, lut, wl, wh);
        for (int j = 0; j < 4; ++j)
          block(lane(wl, j), lane(wh, j), sc + 4 * (4 * g + j), g * 128 + 16 * j, g * 128 + 64 + 16 * j);
      }
      for (int64_t b = ng * 4; b < nb; ++b) {
        const __m256i wv = decode16(row + b * 16, lut16);
        block(_mm256_castsi256_si128(wv), _mm256_extracti128_si256(wv, 1), sc + 4 * b, b * 32, b * 32 + 16);
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = _mm512_reduce_add_ps(acc[i]);
    }
  }
}

// ---- 8-bit rows (kernels.h Rows8): one block = two 16-float halves / one 32-byte VNNI dot ---

void rows8_f32(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
               float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* row = w.q + r * K;
    const uint16_t* dr = w.d + r * nb;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      const float* x[4];
      __m512 acc[4];
      for (int i = 0; i < n; ++i) {
        x[i] = a.xf + int64_t(tok[t0 + i]) * K;
        acc[i] = _mm512_setzero_ps();
      }
      for (int64_t b = 0; b < nb; ++b) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(dr[b]));
        const __m128i* q = reinterpret_cast<const __m128i*>(row + b * 32);
        const __m512 w0 = _mm512_mul_ps(widen(_mm_loadu_si128(q)), d);       // q * d: exact
        const __m512 w1 = _mm512_mul_ps(widen(_mm_loadu_si128(q + 1)), d);
        for (int i = 0; i < n; ++i) {
          const float* xp = x[i] + b * 32;
          acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xp), w0, acc[i]);
          acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xp + 16), w1, acc[i]);
        }
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = hsum(acc[i], _mm256_setzero_ps());
    }
  }
}

// Two blocks per 512-bit step: |q| (u8) dotted with x negated where q < 0 (VNNI dpbusd: 8 int32
// lanes per block), times the row's and the token's block scales. Loop order as rows_i8: a block
// of rows (scales decoded once), then tiles of tokens over those rows, so both stay in L1.

// One 8-bit row against N tokens: y[i * ldy] = row . token i; s1: the row's block scales.
template <int N>
void row8_tile_i8(const int8_t* row, const float* s1, int64_t nb, const int8_t* const* x,
                  const float* const* xd8, float* y, int64_t ldy) {
  const int64_t n2 = nb / 2;
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc[N];
  __m256 tail[N];
  for (int i = 0; i < N; ++i) {
    acc[i] = _mm512_setzero_ps();
    tail[i] = _mm256_setzero_ps();
  }
  for (int64_t g = 0; g < n2; ++g) {
    const __m512i q = _mm512_loadu_si512(row + 64 * g);
    const __m512i qa = _mm512_abs_epi8(q);          // |q| as u8 (128 for -128: still right)
    const __mmask64 neg = _mm512_movepi8_mask(q);
    const __m512 dw = _mm512_permutexvar_ps(spread, _mm512_castpd_ps(_mm512_castpd128_pd512(
        _mm_castsi128_pd(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s1 + 2 * g))))));
    for (int i = 0; i < N; ++i) {
      const __m512i xv = _mm512_loadu_si512(x[i] + 64 * g);
      const __m512i xs = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, xs);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, _mm512_loadu_ps(xd8[i] + 16 * g)), acc[i]);
    }
  }
  if (nb % 2) {                                     // the last block, 256 bits
    const int64_t b = nb - 1;
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * 32));
    const __m256i qa = _mm256_sign_epi8(q, q);
    for (int i = 0; i < N; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i] + b * 32));
      const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qa, _mm256_sign_epi8(xv, q));
      tail[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s1[b] * xd8[i][8 * b]));
    }
  }
  for (int i = 0; i < N; ++i) y[int64_t(i) * ldy] = hsum(acc[i], tail[i]);
}

void rows8_i8(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
              float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  float s1[kRowBlock * kMaxBlocks];
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    for (int64_t r = rb; r < re; ++r) {
      const uint16_t* dr = w.d + r * nb;
      float* s = s1 + (r - rb) * nb;
      int64_t b = 0;
      for (; b + 16 <= nb; b += 16)
        _mm512_storeu_ps(s + b, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dr + b))));
      for (; b < nb; ++b) s[b] = _cvtsh_ss(dr[b]);
    }
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
  quantize_i8_laid(x, T, nb, 4, offset, q, d4, xoff);
}

}  // namespace
}  // namespace gek

#pragma GCC pop_options

namespace gek {
const Isa* isa_avx512() {   // compiled for the baseline: safe to call on any x86-64
  static const Isa isa{"avx512", 4, rows_f32, rows_i8, rows8_f32, rows8_i8, quantize, quantize_i8_natural_simd};
  const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("f16c");
  return ok ? &isa : nullptr;
}
}  // namespace gek
#endif
