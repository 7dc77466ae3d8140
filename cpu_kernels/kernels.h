// 4-bit block dot products (MXFP4 / int4 rows of 32-element blocks) and the per-ISA table.
// Pure kernels: no ONNX Runtime here (ort_glue.cpp is the glue).
//
// A weight row: nb blocks of 16 bytes; byte j of block b holds element 32b+2j in its low nibble
// and 32b+2j+1 in its high nibble (the op set's layout, = the checkpoint's). A nibble indexes
// a 16-entry int8 table (Lut): MXFP4 -> 2*E2M1 (exact ints in [-12, 12]) with block scale
// 2^(s-128); int4 -> q-8 with the float16 block scale. So w = lut[nibble] * scale exactly.
//
// Activations are re-laid once per token so that nibbles need no interleaving: blocks are taken
// in groups of G (the ISA's group, G*16 bytes = one vector load of weights); a group's 32*G
// values are stored [evens of block 0 .. evens of block G-1, odds of block 0 .. odds of G-1].
// Blocks past the last full group use G = 1. Two modes:
//   f32: activations float (exact products; fp32 accumulation),
//   i8 : activations quantized per block of 32 to int8, symmetric, d = amax/127, round to
//        nearest even (as llama.cpp's q8_0 / ORT's QMoE do); int32 block dots, float sum.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gek {

enum class ScaleKind { E8M0, F16 };   // MXFP4 exponent bytes / int4 float16 scales

struct Lut {
  int8_t v[16];      // signed weight integers
  uint8_t u[16];     // v + offset >= 0 (for unsigned x signed int8 dot instructions)
  int offset;
};
const Lut& mxfp4_lut();   // 2*E2M1 values
const Lut& int4_lut();    // q - 8

// Weight rows [rows, nb, 16] with their scales [rows, nb].
struct Rows {
  const uint8_t* blocks;
  const void* scales;
  ScaleKind kind;
  const Lut* lut;
  int64_t nb;        // blocks per row (K / 32)
};

// Activations of T tokens (one layout per token, see above), K = 32 * nb.
struct Acts {
  int64_t nb;
  int group;          // G the layout was made for
  const float* xf;    // f32 mode: [T, K] (re-laid) or null
  const int8_t* xq;   // i8 mode: [T, K] (re-laid)
  const float* xd4;   // i8 mode: [T, nb * 4] block scales, each repeated 4 times (the SIMD
                      // kernels' int32 sums hold 4 lanes per block)
  const int32_t* xoff;  // i8 mode: [T, nb * 4] -offset * (sum of the block's int8 values at
                        // natural positions 8m .. 8m+7) at [4 b + m]. x86 kernels dot unsigned
                        // (w + offset) with x; a block's int32 dot lanes m (each covering those
                        // 8 positions) start from these, so the int32 sums are w . x exactly.
};

// 8-bit weight rows (the op set's Gemm8bit, llama.cpp's q8_0): [rows, nb, 32] int8 q in
// [-127, 127] in natural order, float16 block scales d [rows, nb]; w = q * d exactly (a 7-bit
// integer times an 11-bit significand fits float32's 24 bits).
struct Rows8 {
  const int8_t* q;
  const uint16_t* d;
  int64_t nb;
};

// Activations for 8-bit rows, natural order (no re-layout): f32 mode xf [T, K]; i8 mode xq
// [T, K] quantized per block of 32 as quantize_i8 does, with each block scale written 8 times,
// xd8 [T, nb * 8] (a 512-bit int32 dot holds 8 lanes per block; block b's scale is xd8[8 b]).
struct Acts8 {
  int64_t nb;
  const float* xf;
  const int8_t* xq;
  const float* xd8;
};

using RowsFn = void (*)(const Rows&, const Acts&, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
                        float* y, int64_t ldy);
using Rows8Fn = void (*)(const Rows8&, const Acts8&, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
                         float* y, int64_t ldy);

// Activation quantizers (the scheme and layouts above): for the 4-bit kernels in the ISA's
// group layout (q, d4, xoff), and in natural order for the 8-bit ones (q, d8).
using QuantizeFn = void (*)(const float* x, int64_t T, int64_t nb, int offset, int8_t* q, float* d4,
                            int32_t* xoff);
using Quantize8Fn = void (*)(const float* x, int64_t T, int64_t nb, int8_t* q, float* d8);

// One ISA: dot products of rows [r0, r1) with tokens; y[t * ldy + r] = row r . token t.
// Tokens are processed in fours (weights decoded once per 4 tokens). Null quantizers: the
// portable scalar ones (quantize_i8 with `group`, quantize_i8_natural), which give the same bits.
struct Isa {
  const char* name;
  int group;
  RowsFn rows_f32;
  RowsFn rows_i8;
  Rows8Fn rows8_f32;
  Rows8Fn rows8_i8;
  QuantizeFn quantize = nullptr;
  Quantize8Fn quantize8 = nullptr;
};

// Portable 8-bit row kernels (an ISA without its own uses these).
void rows8_f32_portable(const Rows8&, const Acts8&, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
                        float* y, int64_t ldy);
void rows8_i8_portable(const Rows8&, const Acts8&, int64_t r0, int64_t r1, const int32_t* tok, int ntok,
                       float* y, int64_t ldy);
// Natural-order int8 quantization of T tokens (for Acts8): q [T, K], scales d8 [T, nb * 8].
void quantize_i8_natural(const float* x, int64_t T, int64_t nb, int8_t* q, float* d8);

const Isa& isa_portable();
const Isa* isa_avx2();     // null when not compiled in / CPU lacks it
const Isa* isa_avx512();   // AVX-512 F/BW/VL + VNNI
const Isa* isa_neon();     // aarch64 dot product
// "auto" picks the best the CPU has; a name forces one (null if unavailable).
const Isa* select_isa(const char* name);

// Block scales of one row as float (the scale that multiplies the Lut integers).
void row_scales(const Rows& w, int64_t row, float* out);
float e8m0_scale(uint8_t s);     // 2^(s-128)
float half_to_float(uint16_t h);

// Re-lay (and quantize) T tokens' activations x [T, K] for `group`; buffers sized T*K, T*nb*4.
// `offset` is the weights' Lut offset (Acts::xoff).
void layout_f32(const float* x, int64_t T, int64_t nb, int group, float* out);
void quantize_i8(const float* x, int64_t T, int64_t nb, int group, int offset, int8_t* q, float* d4,
                 int32_t* xoff);

}  // namespace gek
