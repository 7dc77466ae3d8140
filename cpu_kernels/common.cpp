// Tables, scale decoding, activation layout/quantization, ISA selection, portable kernels.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"

namespace gek {

const Lut& mxfp4_lut() {
  // E2M1 magnitudes [0, .5, 1, 1.5, 2, 3, 4, 6] doubled; bit 3 is the sign.
  static const Lut l{{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12},
                     {12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0}, 12};
  return l;
}

const Lut& int4_lut() {
  static const Lut l{{-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7},
                     {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 8};
  return l;
}

float e8m0_scale(uint8_t s) { return std::ldexp(1.0f, int(s) - 128); }   // exact (denormal at s=0)

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(float(man), -24);
  } else if (exp == 31) {
    v = man ? NAN : INFINITY;
  } else {
    v = std::ldexp(float(man | 0x400), exp - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits |= sign;
  std::memcpy(&v, &bits, 4);
  return v;
}

void row_scales(const Rows& w, int64_t row, float* out) {
  if (w.kind == ScaleKind::E8M0) {
    static const std::vector<float> table = [] {
      std::vector<float> t(256);
      for (int s = 0; s < 256; ++s) t[s] = e8m0_scale(uint8_t(s));
      return t;
    }();
    const uint8_t* s = static_cast<const uint8_t*>(w.scales) + row * w.nb;
    for (int64_t b = 0; b < w.nb; ++b) out[b] = table[s[b]];
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(w.scales) + row * w.nb;
    for (int64_t b = 0; b < w.nb; ++b) out[b] = half_to_float(s[b]);
  }
}

// Position of element e (0..31) of block b in the re-laid token (see kernels.h).
static inline int64_t laid_index(int64_t b, int e, int64_t nb, int group) {
  const int64_t full = nb / group * group;
  if (b >= full) return b * 32 + (e & 1) * 16 + (e >> 1);
  const int64_t g0 = b / group * group;
  const int64_t j = b - g0;
  return g0 * 32 + (e & 1) * 16 * group + j * 16 + (e >> 1);
}

void layout_f32(const float* x, int64_t T, int64_t nb, int group, float* out) {
  const int64_t K = nb * 32;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < nb; ++b)
      for (int e = 0; e < 32; ++e) out[t * K + laid_index(b, e, nb, group)] = x[t * K + b * 32 + e];
}

// One block of 32 activations -> int8 q (nearest, ties to even) with d = max|x| / 127.
static float quantize_block(const float* xb, int8_t* q) {
  float amax = 0.f;
  for (int e = 0; e < 32; ++e) amax = std::fmax(amax, std::fabs(xb[e]));
  const float db = amax / 127.f;
  for (int e = 0; e < 32; ++e) q[e] = int8_t(db > 0.f ? std::nearbyint(xb[e] / db) : 0.f);
  return db;
}

void quantize_i8(const float* x, int64_t T, int64_t nb, int group, int offset, int8_t* q, float* d4,
                 int32_t* xoff) {
  const int64_t K = nb * 32;
  int8_t qb[32];
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const float db = quantize_block(x + t * K + b * 32, qb);
      for (int j = 0; j < 4; ++j) d4[(t * nb + b) * 4 + j] = db;
      for (int m = 0; m < 4; ++m) {
        int32_t sum = 0;
        for (int e = 8 * m; e < 8 * m + 8; ++e) sum += qb[e];
        xoff[(t * nb + b) * 4 + m] = -offset * sum;
      }
      for (int e = 0; e < 32; ++e) q[t * K + laid_index(b, e, nb, group)] = qb[e];
    }
  }
}

void quantize_i8_natural(const float* x, int64_t T, int64_t nb, int8_t* q, float* d8) {
  for (int64_t i = 0; i < T * nb; ++i) {
    const float d = quantize_block(x + i * 32, q + i * 32);
    for (int j = 0; j < 8; ++j) d8[8 * i + j] = d;
  }
}

// ---- portable kernels (group 1) -----------------------------------------------------------
static void decode_block(const uint8_t* blk, const Lut& lut, int8_t* w) {   // -> [evens, odds]
  for (int j = 0; j < 16; ++j) {
    w[j] = lut.v[blk[j] & 15];
    w[16 + j] = lut.v[blk[j] >> 4];
  }
}

static void rows_f32_portable(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok,
                              int ntok, float* y, int64_t ldy) {
  const int64_t K = w.nb * 32;
  std::vector<float> sc(w.nb);
  int8_t wb[32];
  for (int64_t r = r0; r < r1; ++r) {
    row_scales(w, r, sc.data());
    const uint8_t* row = w.blocks + r * w.nb * 16;
    for (int i = 0; i < ntok; ++i) {
      const float* x = a.xf + int64_t(tok[i]) * K;
      float acc = 0.f;
      for (int64_t b = 0; b < w.nb; ++b) {
        decode_block(row + b * 16, *w.lut, wb);
        float s = 0.f;
        for (int e = 0; e < 32; ++e) s += x[b * 32 + e] * float(wb[e]);
        acc += s * sc[b];
      }
      y[i * ldy + r] = acc;
    }
  }
}

static void rows_i8_portable(const Rows& w, const Acts& a, int64_t r0, int64_t r1, const int32_t* tok,
                             int ntok, float* y, int64_t ldy) {
  const int64_t K = w.nb * 32;
  std::vector<float> sc(w.nb);
  int8_t wb[32];
  for (int64_t r = r0; r < r1; ++r) {
    row_scales(w, r, sc.data());
    const uint8_t* row = w.blocks + r * w.nb * 16;
    for (int i = 0; i < ntok; ++i) {
      const int8_t* x = a.xq + int64_t(tok[i]) * K;
      const float* xd4 = a.xd4 + int64_t(tok[i]) * w.nb * 4;
      float acc = 0.f;
      for (int64_t b = 0; b < w.nb; ++b) {
        decode_block(row + b * 16, *w.lut, wb);
        int32_t s = 0;
        for (int e = 0; e < 32; ++e) s += int32_t(x[b * 32 + e]) * wb[e];
        acc += float(s) * (sc[b] * xd4[4 * b]);
      }
      y[i * ldy + r] = acc;
    }
  }
}

// 8-bit rows: per block, the 32 exact products summed in float32 (f32) or int32 (i8), times
// the block scale(s), accumulated in float32.
void rows8_f32_portable(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
                        float* y, int64_t ldy) {
  const int64_t K = w.nb * 32;
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* row = w.q + r * K;
    for (int i = 0; i < ntok; ++i) {
      const float* x = a.xf + int64_t(tok[i]) * K;
      float acc = 0.f;
      for (int64_t b = 0; b < w.nb; ++b) {
        const float d = half_to_float(w.d[r * w.nb + b]);
        float s = 0.f;
        for (int e = 0; e < 32; ++e) s += x[b * 32 + e] * (float(row[b * 32 + e]) * d);
        acc += s;
      }
      y[i * ldy + r] = acc;
    }
  }
}

void rows8_i8_portable(const Rows8& w, const Acts8& a, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
                       float* y, int64_t ldy) {
  const int64_t K = w.nb * 32;
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* row = w.q + r * K;
    for (int i = 0; i < ntok; ++i) {
      const int8_t* x = a.xq + int64_t(tok[i]) * K;
      const float* xd8 = a.xd8 + int64_t(tok[i]) * w.nb * 8;
      float acc = 0.f;
      for (int64_t b = 0; b < w.nb; ++b) {
        int32_t s = 0;
        for (int e = 0; e < 32; ++e) s += int32_t(x[b * 32 + e]) * row[b * 32 + e];
        acc += float(s) * (half_to_float(w.d[r * w.nb + b]) * xd8[8 * b]);
      }
      y[i * ldy + r] = acc;
    }
  }
}

const Isa& isa_portable() {
  static const Isa isa{"portable", 1, rows_f32_portable, rows_i8_portable, rows8_f32_portable, rows8_i8_portable};
  return isa;
}

#if !defined(__x86_64__)
const Isa* isa_avx2() { return nullptr; }
const Isa* isa_avx512() { return nullptr; }
#endif
#if !defined(__aarch64__)
const Isa* isa_neon() { return nullptr; }
#endif

const Isa* select_isa(const char* name) {
  const std::string n = name ? name : "auto";
  if (n == "portable") return &isa_portable();
  if (n == "avx2") return isa_avx2();
  if (n == "avx512") return isa_avx512();
  if (n == "neon") return isa_neon();
  if (n != "auto") return nullptr;
  if (const Isa* i = isa_avx512()) return i;
  if (const Isa* i = isa_avx2()) return i;
  if (const Isa* i = isa_neon()) return i;
  return &isa_portable();
}

}  // namespace gek
