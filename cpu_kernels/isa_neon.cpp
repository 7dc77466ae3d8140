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

void rows_i8(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
             float* y, int64_t ldy) {
  const int64_t nb = w.nb, K = nb * 32;
  const int8x16_t lut = vld1q_s8(w.lut->v);
  float sc[kMaxBlocks];
  for (int64_t r = r0; r < r1; ++r) {
    row_scales(w, r, sc);
    const uint8_t* row = w.blocks + r * nb * 16;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
      const int n = ntok - t0 < 4 ? ntok - t0 : 4;
      float32x4_t acc[4];
      for (int i = 0; i < n; ++i) acc[i] = vdupq_n_f32(0.f);
      for (int64_t b = 0; b < nb; ++b) {
        int8x16_t wl, wh;
        decode16(row + b * 16, lut, wl, wh);
        for (int i = 0; i < n; ++i) {
          const int8_t* x = a.xq + int64_t(tok[t0 + i]) * K + b * 32;
          const float d = sc[b] * a.xd4[(int64_t(tok[t0 + i]) * nb + b) * 4];
          int32x4_t s = vdotq_s32(vdupq_n_s32(0), wl, vld1q_s8(x));
          s = vdotq_s32(s, wh, vld1q_s8(x + 16));
          acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(s), d);
        }
      }
      for (int i = 0; i < n; ++i) y[int64_t(t0 + i) * ldy + r] = vaddvq_f32(acc[i]);
    }
  }
}

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
    row_scales(w, r, sc);
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

}  // namespace
}  // namespace gek

#pragma GCC pop_options

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)   // Linux aarch64 hwcap bit for the dot-product instructions
#endif

namespace gek {
const Isa* isa_neon() {
  // 8-bit rows: the portable kernels (no NEON version yet; the compiler vectorizes them)
  static const Isa isa{"neon", 1, rows_f32, rows_i8, rows8_f32_portable, rows8_i8_portable};
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) ? &isa : nullptr;
}
}  // namespace gek
#endif
