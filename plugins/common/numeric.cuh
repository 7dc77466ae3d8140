// Device helpers: activation loads/stores (fp32/fp16/bf16) and in-register 4-bit decoding.
// Orin (sm_87) and RTX 40 (sm_89) have no FP4 hardware: nibbles are decoded with integer ops.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace gpe
{

// ---- activations --------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

// Unpack one 16-byte vector holding 16/sizeof(T) activations into floats.
__device__ __forceinline__ void unpack16(uint4 raw, float const*, float* out)
{
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack16(uint4 raw, __half const*, float* out)
{
    uint32_t const w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        float2 f = __half22float2(*reinterpret_cast<__half2 const*>(&w[i]));
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void unpack16(uint4 raw, __nv_bfloat16 const*, float* out)
{
    uint32_t const w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        // bf16 -> fp32 is a 16-bit shift: exact, no intrinsic needed.
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// Load 32 consecutive activations (p must be 16-byte aligned) as floats, 128-bit loads.
template <typename T>
__device__ __forceinline__ void load32(T const* p, float* out)
{
    constexpr int kPerVec = 16 / sizeof(T);
    uint4 const* v = reinterpret_cast<uint4 const*>(p);
#pragma unroll
    for (int i = 0; i < 32 / kPerVec; ++i)
        unpack16(__ldg(v + i), p, out + i * kPerVec);
}

// Load 8 consecutive activations (p must be 16-byte aligned) as floats.
template <typename T>
__device__ __forceinline__ void load8(T const* p, float* out)
{
    constexpr int kPerVec = 16 / sizeof(T);
    uint4 const* v = reinterpret_cast<uint4 const*>(p);
#pragma unroll
    for (int i = 0; i < 8 / kPerVec; ++i)
        unpack16(__ldg(v + i), p, out + i * kPerVec);
}

// ---- 4-bit weights ------------------------------------------------------------------------
// E2M1 nibble: bit 3 sign, bits 0-2 index into [0, .5, 1, 1.5, 2, 3, 4, 6]. Twice the
// magnitudes are the integers [0,1,2,3,4,6,8,12], packed one per nibble in kE2M1Twice; the
// factor 1/2 is folded into the block scale (e8m0_half_scale).
constexpr uint32_t kE2M1Twice = 0xC8643210u;

__device__ __forceinline__ float e2m1_twice(uint32_t nibble)
{
    float mag = static_cast<float>((kE2M1Twice >> ((nibble & 7u) * 4u)) & 0xFu);
    return __uint_as_float(__float_as_uint(mag) | ((nibble & 8u) << 28));
}

// E8M0 exponent s -> 2^(s-127) / 2 = 2^(s-128), built from bits (exact for every s;
// s = 0 gives the subnormal 2^-128); s = 255 is NaN in the OCP MX spec, so the whole block
// decodes to NaN. Multiplies e2m1_twice().
__device__ __forceinline__ float e8m0_half_scale(uint32_t s)
{
    return s == 0u ? __uint_as_float(0x00200000u) : s == 255u ? __uint_as_float(0x7fc00000u)
                                                              : __uint_as_float((s - 1u) << 23);
}

// int4 nibble: q + 8 (offset binary, q in [-8, 7]); w = q * scale.
__device__ __forceinline__ float int4_value(uint32_t nibble)
{
    return static_cast<float>(static_cast<int>(nibble & 0xFu) - 8);
}

enum class W4Format { kMxfp4, kInt4 };

// Per-block multiplier applied to the decoded nibble values of the block.
template <W4Format F> __device__ __forceinline__ float block_scale(void const* scales, size_t idx);
template <> __device__ __forceinline__ float block_scale<W4Format::kMxfp4>(void const* scales, size_t idx)
{
    return e8m0_half_scale(__ldg(static_cast<uint8_t const*>(scales) + idx));
}
template <> __device__ __forceinline__ float block_scale<W4Format::kInt4>(void const* scales, size_t idx)
{
    return __half2float(__ldg(static_cast<__half const*>(scales) + idx));
}

template <W4Format F> __device__ __forceinline__ float nibble_value(uint32_t nibble);
template <> __device__ __forceinline__ float nibble_value<W4Format::kMxfp4>(uint32_t n) { return e2m1_twice(n); }
template <> __device__ __forceinline__ float nibble_value<W4Format::kInt4>(uint32_t n) { return int4_value(n); }

// Decode 4 packed bytes (8 elements: byte j -> elements 2j (low nibble), 2j+1 (high)).
template <W4Format F>
__device__ __forceinline__ void decode8(uint32_t word, float scale, float* out)
{
#pragma unroll
    for (int j = 0; j < 4; ++j)
    {
        uint32_t byte = (word >> (8 * j)) & 0xFFu;
        out[2 * j] = nibble_value<F>(byte & 0xFu) * scale;
        out[2 * j + 1] = nibble_value<F>(byte >> 4) * scale;
    }
}

// Decode one 16-byte block (32 elements) held in registers.
template <W4Format F>
__device__ __forceinline__ void decode32(uint4 raw, float scale, float* out)
{
    decode8<F>(raw.x, scale, out);
    decode8<F>(raw.y, scale, out + 8);
    decode8<F>(raw.z, scale, out + 16);
    decode8<F>(raw.w, scale, out + 24);
}

// ---- warp helpers -------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

} // namespace gpe
