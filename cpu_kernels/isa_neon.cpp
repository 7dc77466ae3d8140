// aarch64 NEON kernels (group 1: one 16-byte block per load); int8 mode uses the Armv8.2
// dot-product instructions (SDOT), chosen at run time from the CPU's hwcaps.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")

namespace gek {
namespace {

constexpr int kMaxBlocks = 1024;

inline void decode16(const uint8_t* p, int8x16_t lut, int8x16_t& wl, int8x16_t& wh) {
  const uint8x16_t v = vld1q_u8(p);
  wl = vqtbl1q_s8(lut, vandq_u8(v, vdupq_n_u8(0x0f)));
  wh = vqtbl1q_s8(lut, vshrq_n_u8(v, 4));
}

// n float16 values as float, by FCVTL (base AArch64) four at a time.
inline void halves_f32(const uint16_t* s, int64_t n, float* out) {
  int64_t b = 0;
  for (; b + 4 <= n; b += 4) vst1q_f32(out + b, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(s + b))));
  for (; b < n; ++b) out[b] = half_to_float(s[b]);
}

// The block scales of one 4-bit row as float: E8M0 through the portable table, or float16.
inline void scales_f32(const Rows& w, int64_t row, float* out) {
  if (w.kind == ScaleKind::E8M0) return row_scales(w, row, out);
  halves_f32(static_cast<const uint16_t*>(w.scales) + row * w.nb, w.nb, out);
}

// ---- int8 activations: SDOT (4 products per int32 lane, signed x signed: no offset) --------
// Loop order as the x86 kernels: a block of rows has its scales decoded once, then each tile
// of tokens runs over those rows, so the tile's activations and the rows' weights stay in L1.
constexpr int kTile = 4;        // tokens per pass over a row
constexpr int kRowBlock = 16;   // rows per block

// What the 4-bit and 8-bit int8 paths differ in: where a row starts, a block's 32 weights as two
// 16-byte halves that line up with the activation layout, a row block's scales, and the stride
// of the activations' block scales (kernels.h: xd4 / xd8).
struct Nibbles {                    // 4-bit rows: [evens | odds] of the re-laid activations
  const Rows& w;
  int8x16_t lut;
  static constexpr int kScaleStride = 4;
  const uint8_t* row(int64_t r) const { return w.blocks + r * w.nb * 16; }
  void block(const uint8_t* row, int64_t b, int8x16_t& lo, int8x16_t& hi) const { decode16(row + b * 16, lut, lo, hi); }
  void scales(int64_t rb, int64_t re, float* s1) const {
    for (int64_t r = rb; r < re; ++r) scales_f32(w, r, s1 + (r - rb) * w.nb);
  }
};

struct Bytes {                      // 8-bit rows: natural order
  const Rows8& w;
  static constexpr int kScaleStride = 8;
  const int8_t* row(int64_t r) const { return w.q + r * w.nb * 32; }
  void block(const int8_t* row, int64_t b, int8x16_t& lo, int8x16_t& hi) const {
    lo = vld1q_s8(row + b * 32);
    hi = vld1q_s8(row + b * 32 + 16);
  }
  void scales(int64_t rb, int64_t re, float* s1) const { halves_f32(w.d + rb * w.nb, (re - rb) * w.nb, s1); }
};

// One row against N tokens: y[i * ldy] = row . token i; s1: the row's block scales, xd: each
// token's block scales (stride F::kScaleStride).
template <class F, int N, class Row>
void row_tile_i8(const F& f, const Row* row, const float* s1, int64_t nb, const int8_t* const* x,
                 const float* const* xd, float* y, int64_t ldy) {
  float32x4_t acc[N];
  for (int i = 0; i < N; ++i) acc[i] = vdupq_n_f32(0.f);
  for (int64_t b = 0; b < nb; ++b) {
    int8x16_t lo, hi;
    f.block(row, b, lo, hi);
    for (int i = 0; i < N; ++i) {
      const int8_t* xp = x[i] + b * 32;
      const int32x4_t p = vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(xp)), hi, vld1q_s8(xp + 16));
      acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(p), s1[b] * xd[i][F::kScaleStride * b]);
    }
  }
  for (int i = 0; i < N; ++i) y[int64_t(i) * ldy] = vaddvq_f32(acc[i]);
}

// Rows [r0, r1) against the listed tokens: blocks of rows (scales decoded once), tiles of tokens.
template <class F>
void rows_blocked_i8(const F& f, int64_t nb, const int8_t* xq, const float* xds, int64_t r0, int64_t r1,
                     const int32_t* tok, int ntok, float* y, int64_t ldy) {
  const int64_t K = nb * 32;
  float s1[kRowBlock * kMaxBlocks];
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    f.scales(rb, re, s1);
    for (int t0 = 0; t0 < ntok; t0 += kTile) {
      const int n = ntok - t0 < kTile ? ntok - t0 : kTile;
      const int8_t* x[kTile];
      const float* xd[kTile];
      for (int i = 0; i < n; ++i) {
        x[i] = xq + int64_t(tok[t0 + i]) * K;
        xd[i] = xds + int64_t(tok[t0 + i]) * nb * F::kScaleStride;
      }
      for (int64_t r = rb; r < re; ++r) {
        const auto* row = f.row(r);
        const float* s = s1 + (r - rb) * nb;
        float* yr = y + int64_t(t0) * ldy + r;
        switch (n) {
          case 1: row_tile_i8<F, 1>(f, row, s, nb, x, xd, yr, ldy); break;
          case 2: row_tile_i8<F, 2>(f, row, s, nb, x, xd, yr, ldy); break;
          case 3: row_tile_i8<F, 3>(f, row, s, nb, x, xd, yr, ldy); break;
          default: row_tile_i8<F, kTile>(f, row, s, nb, x, xd, yr, ldy); break;
        }
      }
    }
  }
}

void rows_i8(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
             float* y, int64_t ldy) {
  rows_blocked_i8(Nibbles{w, vld1q_s8(w.lut->v)}, w.nb, a.xq, a.xd4, r0, r1, tok, ntok, y, ldy);
}

void rows8_i8(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
              float* y, int64_t ldy) {
  rows_blocked_i8(Bytes{w}, w.nb, a.xq, a.xd8, r0, r1, tok, ntok, y, ldy);
}

// ---- float32 activations (the exact mode) --------------------------------------------------
inline void widen4(int8x16_t v, float32x4_t out[4]) {
  const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
  out[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
  out[1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
  out[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
  out[3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
}

void rows_f32(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
              float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  const int8x16_t lut = vld1q_s8(w.lut->v);
  float sc[kMaxBlocks];
  for (int64_t r = r0; r < r1; ++r) {
    scales_f32(w, r, sc);
    const uint8_t* row = w.blocks + r * nb * 16;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      float32x4_t acc[4];
      for (int i = 0; i < n; ++i) acc[i] = vdupq_n_f32(0.f);
      for (int64_t b = 0; b < nb; ++b) {
        int8x16_t wl, wh;
        decode16(row + b * 16, lut, wl, wh);
        float32x4_t we[4], wo[4];
        widen4(wl, we);
        widen4(wh, wo);
        for (int i = 0; i < n; ++i) {
          const float* x = a.xf + int64_t(tok[t0 + i]) * K + b * 32;
          float32x4_t p = vmulq_f32(vld1q_f32(x), we[0]);
          for (int q = 1; q < 4; ++q) p = vfmaq_f32(p, vld1q_f32(x + 4 * q), we[q]);
          for (int q = 0; q < 4; ++q) p = vfmaq_f32(p, vld1q_f32(x + 16 + 4 * q), wo[q]);
          acc[i] = vfmaq_n_f32(acc[i], p, sc[b]);
        }
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = vaddvq_f32(acc[i]);
    }
  }
}

// 8-bit rows against float activations: w = q d is exact in float32 (kernels.h Rows8).
void rows8_f32(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
               float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  float d[kMaxBlocks];
  for (int64_t r = r0; r < r1; ++r) {
    halves_f32(w.d + r * nb, nb, d);
    const int8_t* row = w.q + r * K;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      float32x4_t acc[4];
      for (int i = 0; i < n; ++i) acc[i] = vdupq_n_f32(0.f);
      for (int64_t b = 0; b < nb; ++b) {
        float32x4_t wf[8];
        widen4(vld1q_s8(row + b * 32), wf);
        widen4(vld1q_s8(row + b * 32 + 16), wf + 4);
        for (int q = 0; q < 8; ++q) wf[q] = vmulq_n_f32(wf[q], d[b]);
        for (int i = 0; i < n; ++i) {
          const float* x = a.xf + int64_t(tok[t0 + i]) * K + b * 32;
          for (int q = 0; q < 8; ++q) acc[i] = vfmaq_f32(acc[i], vld1q_f32(x + 4 * q), wf[q]);
        }
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = vaddvq_f32(acc[i]);
    }
  }
}

// ---- int8 activation quantization (kernels.h), bit-identical to common.cpp's scalar one:
// IEEE float32 division in both, FCVTNS rounds half to even as nearbyint does ----------------

// One block of 32: q in natural order (q0: elements 0-15, q1: 16-31) and the int32 sums of its
// four runs of 8 (lane m: elements 8m .. 8m+7). Returns d.
inline float quantize_block32(const float* x, int8x16_t& q0, int8x16_t& q1, int32x4_t& runs) {
  float32x4_t v[8];
  float32x4_t amax = vdupq_n_f32(0.f);
  for (int j = 0; j < 8; ++j) {
    v[j] = vld1q_f32(x + 4 * j);
    amax = vmaxq_f32(amax, vabsq_f32(v[j]));
  }
  const float d = vmaxvq_f32(amax) / 127.f;
  int32x4_t i[8];
  for (int j = 0; j < 8; ++j) i[j] = d > 0.f ? vcvtnq_s32_f32(vdivq_f32(v[j], vdupq_n_f32(d))) : vdupq_n_s32(0);
  runs = vpaddq_s32(vpaddq_s32(vaddq_s32(i[0], i[1]), vaddq_s32(i[2], i[3])),
                    vpaddq_s32(vaddq_s32(i[4], i[5]), vaddq_s32(i[6], i[7])));
  int16x8_t h[4];
  for (int j = 0; j < 4; ++j) h[j] = vcombine_s16(vqmovn_s32(i[2 * j]), vqmovn_s32(i[2 * j + 1]));
  q0 = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
  q1 = vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3]));
  return d;
}

// T tokens in the group-1 layout of the 4-bit kernels: per block the 16 evens, then the odds.
void quantize(const float* x, int64_t T, int64_t nb, int offset, int8_t* q, float* d4, int32_t* xoff) {
  for (int64_t i = 0; i < T * nb; ++i) {
    int8x16_t q0, q1;
    int32x4_t runs;
    const float d = quantize_block32(x + i * 32, q0, q1, runs);
    vst1q_s8(q + i * 32, vuzp1q_s8(q0, q1));
    vst1q_s8(q + i * 32 + 16, vuzp2q_s8(q0, q1));
    vst1q_f32(d4 + i * 4, vdupq_n_f32(d));
    vst1q_s32(xoff + i * 4, vmulq_n_s32(runs, -offset));
  }
}

// Natural order for the 8-bit kernels (Acts8): q [T, K], d8 [T, nb * 8].
void quantize8(const float* x, int64_t T, int64_t nb, int8_t* q, float* d8) {
  for (int64_t i = 0; i < T * nb; ++i) {
    int8x16_t q0, q1;
    int32x4_t runs;
    const float d = quantize_block32(x + i * 32, q0, q1, runs);
    vst1q_s8(q + i * 32, q0);
    vst1q_s8(q + i * 32 + 16, q1);
    vst1q_f32(d8 + i * 8, vdupq_n_f32(d));
    vst1q_f32(d8 + i * 8 + 4, vdupq_n_f32(d));
  }
}

}  // namespace
}  // namespace gek

#pragma GCC pop_options

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)   // Linux aarch64 hwcap bit for the dot-product instructions
#endif

namespace gek {
const Isa* isa_neon() {
  static const Isa isa{"neon", 1, rows_f32, rows_i8, rows8_f32, rows8_i8, quantize, quantize8};
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) ? &isa : nullptr;
}
}  // namespace gek
#endif
