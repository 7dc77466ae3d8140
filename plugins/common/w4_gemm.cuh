// Shared W4A16 kernels: y = epilogue(x @ W^T + bias) with W in 4-bit blocks of 32 along K.
// Used by Gemm4bit (one group, identity row maps) and by MoeMxfp4 (one group per expert,
// gathered rows). Two paths here (the tensor-core tiled variant: w4_gemm_mma.cuh):
//   * GEMV (few rows): one warp per output-row pair; each lane owns whole 16-byte blocks
//     (128-bit loads, all of a row's blocks issued before decoding), decodes them in registers
//     a word at a time and multiplies with up to kGemvRows activation rows per pass; only the
//     group's own weight bytes are read (more rows: another pass, the bytes then mostly in L2).
//   * tiled SIMT (many rows): 64x64 output tiles, K stepped one 32-wide block at a time, the
//     weight block dequantized into shared memory, 4x4 fp32 micro-tiles per thread.
// Weights: blocks [G, N, K/32, 16] uint8 (byte j: elements 2j low / 2j+1 high nibble),
//          scales [G, N, K/32] (uint8 E8M0 for mxfp4, fp16 for int4), bias [G, N] fp32 or null.
#pragma once
#include "cuda_check.h"
#include "numeric.cuh"

namespace gpe
{

enum class Epilogue
{
    kBias,   // y[row, n] = acc + bias[n]
    kSwiglu, // rows (2i, 2i+1) = (gate, linear): y[row, i] = swiglu(acc + bias), see SwigluParams
};

struct SwigluParams
{
    float limit;  // gate clamped above, linear clamped to [-limit, limit]
    float alpha;  // sigmoid slope
    float offset; // added to the linear half
};

__device__ __forceinline__ float swiglu(float g, float l, SwigluParams p)
{
    g = fminf(g, p.limit);
    l = fminf(fmaxf(l, -p.limit), p.limit);
    return g * (1.0f / (1.0f + expf(-p.alpha * g))) * (l + p.offset);
}

// Row grouping (device arrays, written by the MoE grouping kernel; all null for one dense group).
struct W4Groups
{
    int const* group_offsets; // [G+1] group g owns grouped rows [off[g], off[g+1])
    int const* active;        // GEMV: slot -> group id, slots < *num_active are live
    int const* num_active;
    int const* tile_group;    // tiled: tile -> group id, tile -> first grouped row
    int const* tile_row0;
    int const* num_tiles;
    int const* in_rows;       // grouped row -> row of x   (null: identity)
    int const* out_rows;      // grouped row -> row of y   (null: identity)
};

struct W4Problem
{
    uint8_t const* blocks;
    void const* scales;
    float const* bias; // may be null
    int N;             // weight rows (outputs before the epilogue)
    int K;             // inputs, multiple of 32
    int M;             // rows when groups.group_offsets is null
    int ldy;           // row stride of y in elements
    SwigluParams swiglu;
    W4Groups groups;
};

constexpr int kGemvWarps = 4;   // warps per block, each one row pair
constexpr int kGemvRows = 8;    // activation rows per pass over the weights
constexpr int kGemvUnroll = 4;  // blocks per lane loaded before decoding (K <= 4096 in one shot)
constexpr int kTileM = 64, kTileN = 64, kTileThreads = 256;
constexpr int kMaxGridY = 65535; // CUDA's limit on gridDim.y (and z)

__device__ __forceinline__ int map_row(int const* map, int r) { return map ? __ldg(map + r) : r; }

template <typename TOut, Epilogue EP>
__device__ __forceinline__ void store_pair(W4Problem const& p, TOut* y, int out_row, int n0, float a0, float a1,
    int g, bool has1)
{
    float const* bias = p.bias ? p.bias + static_cast<size_t>(g) * p.N : nullptr;
    float v0 = a0 + (bias ? __ldg(bias + n0) : 0.f);
    TOut* dst = y + static_cast<size_t>(out_row) * p.ldy;
    if constexpr (EP == Epilogue::kSwiglu)
    {
        float v1 = a1 + (bias ? __ldg(bias + n0 + 1) : 0.f);
        dst[n0 / 2] = from_float<TOut>(swiglu(v0, v1, p.swiglu));
    }
    else
    {
        dst[n0] = from_float<TOut>(v0);
        if (has1)
            dst[n0 + 1] = from_float<TOut>(a1 + (bias ? __ldg(bias + n0 + 1) : 0.f));
    }
}

// Resolve this block's group and its grouped-row range; false: nothing to do.
__device__ __forceinline__ bool gemv_group(W4Problem const& p, int slot, int& g, int& r0, int& r1)
{
    if (!p.groups.group_offsets)
    {
        g = 0, r0 = 0, r1 = p.M;
        return slot == 0;
    }
    if (slot >= __ldg(p.groups.num_active))
        return false;
    g = __ldg(p.groups.active + slot);
    r0 = __ldg(p.groups.group_offsets + g);
    r1 = __ldg(p.groups.group_offsets + g + 1);
    return true;
}

// grid: x = ceil(N/2 / kGemvWarps), y = group slots; block: 32 * kGemvWarps.
template <typename TIn, typename TOut, W4Format F, Epilogue EP>
__global__ void __launch_bounds__(32 * kGemvWarps) w4_gemv_kernel(W4Problem p, TIn const* x, TOut* y)
{
    int g, r0, r1;
    if (!gemv_group(p, blockIdx.y, g, r0, r1))
        return;
    int const lane = threadIdx.x & 31;
    int const n0 = 2 * (blockIdx.x * kGemvWarps + (threadIdx.x >> 5));
    if (n0 >= p.N)
        return;
    bool const has1 = n0 + 1 < p.N;
    int const kb_count = p.K / 32;
    size_t const row0 = static_cast<size_t>(g) * p.N + n0;
    uint4 const* w0 = reinterpret_cast<uint4 const*>(p.blocks) + row0 * kb_count;
    uint4 const* w1 = w0 + (has1 ? kb_count : 0);

    for (int rb = r0; rb < r1; rb += kGemvRows)
    {
        int const nr = min(kGemvRows, r1 - rb);
        int xrow[kGemvRows];
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r)
            xrow[r] = r < nr ? map_row(p.groups.in_rows, rb + r) : 0;
        float acc0[kGemvRows] = {}, acc1[kGemvRows] = {};
        for (int kb0 = 0; kb0 < kb_count; kb0 += 32 * kGemvUnroll)
        {
            uint4 raw0[kGemvUnroll], raw1[kGemvUnroll];
            float s0[kGemvUnroll], s1[kGemvUnroll];
#pragma unroll
            for (int u = 0; u < kGemvUnroll; ++u) // issue every load first: bytes in flight
            {
                int const kb = kb0 + lane + 32 * u;
                bool const ok = kb < kb_count;
                raw0[u] = ok ? __ldg(w0 + kb) : make_uint4(0, 0, 0, 0);
                raw1[u] = ok ? __ldg(w1 + kb) : make_uint4(0, 0, 0, 0);
                s0[u] = ok ? block_scale<F>(p.scales, row0 * kb_count + kb) : 0.f;
                s1[u] = ok && has1 ? block_scale<F>(p.scales, (row0 + 1) * kb_count + kb) : 0.f;
            }
#pragma unroll
            for (int u = 0; u < kGemvUnroll; ++u)
            {
                int const kb = kb0 + lane + 32 * u;
                if (kb >= kb_count)
                    break;
                uint32_t const word0[4] = {raw0[u].x, raw0[u].y, raw0[u].z, raw0[u].w};
                uint32_t const word1[4] = {raw1[u].x, raw1[u].y, raw1[u].z, raw1[u].w};
                // One 4-byte word (8 weights) of each row decoded at a time, not the whole
                // 32-element block: 16 live decoded floats instead of 64 keeps the kernel
                // within its registers (no spills). Per row the FMAs keep the order i = 0..31.
#pragma unroll
                for (int j = 0; j < 4; ++j)
                {
                    float wa[8], wb[8];
                    decode8<F>(word0[j], s0[u], wa);
                    decode8<F>(word1[j], s1[u], wb);
#pragma unroll
                    for (int r = 0; r < kGemvRows; ++r)
                    {
                        if (r >= nr)
                            break;
                        float xv[8];
                        load8(x + static_cast<size_t>(xrow[r]) * p.K + kb * 32 + j * 8, xv);
#pragma unroll
                        for (int i = 0; i < 8; ++i)
                        {
                            acc0[r] = fmaf(wa[i], xv[i], acc0[r]);
                            acc1[r] = fmaf(wb[i], xv[i], acc1[r]);
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r)
        {
            if (r >= nr)
                break;
            float a0 = warp_sum(acc0[r]);
            float a1 = warp_sum(acc1[r]);
            if (lane == 0)
                store_pair<TOut, EP>(p, y, map_row(p.groups.out_rows, rb + r), n0, a0, a1, g, has1);
        }
    }
}

// Resolve this tile's group and grouped-row range; false: nothing to do.
__device__ __forceinline__ bool tiled_group(W4Problem const& p, int tile, int& g, int& r0, int& r1)
{
    if (!p.groups.group_offsets)
    {
        g = 0, r0 = tile * kTileM, r1 = min(p.M, r0 + kTileM);
        return r0 < p.M;
    }
    if (tile >= __ldg(p.groups.num_tiles))
        return false;
    g = __ldg(p.groups.tile_group + tile);
    r0 = __ldg(p.groups.tile_row0 + tile);
    r1 = min(__ldg(p.groups.group_offsets + g + 1), r0 + kTileM);
    return true;
}

// One loader thread's share of K step kb of a 64-row tile, shared by the SIMT tiled and the
// tensor-core kernels: 8 consecutive activations of x row `xr` (zeros for a padding row, xr < 0)
// and, of weight row `wrow`, the lseg-th 4-byte word of its 16-byte block plus the block scale.
// Fetching step kb+1 while step kb computes keeps the global loads in flight (register prefetch).
template <typename TIn, W4Format F>
struct TileFetch
{
    uint8_t const* blocks;
    void const* scales;
    TIn const* x;
    int K, xr, lseg, kb_count;
    size_t wrow;
    bool wvalid;
    float xv[8];
    uint32_t word = 0;
    float wscale = 0.f;

    __device__ __forceinline__ void fetch(int kb)
    {
#pragma unroll
        for (int i = 0; i < 8; ++i)
            xv[i] = 0.f;
        if (xr >= 0)
            load8(x + static_cast<size_t>(xr) * K + kb * 32 + lseg * 8, xv);
        if (wvalid)
        {
            word = __ldg(reinterpret_cast<uint32_t const*>(blocks + (wrow * kb_count + kb) * 16) + lseg);
            wscale = block_scale<F>(scales, wrow * kb_count + kb);
        }
    }

    // The 8 weights of the fetched word (zeros past the last weight row).
    __device__ __forceinline__ void decode(float* wv) const
    {
#pragma unroll
        for (int i = 0; i < 8; ++i)
            wv[i] = 0.f;
        if (wvalid)
            decode8<F>(word, wscale, wv);
    }
};

// grid: x = ceil(N / kTileN), y = tiles; block: kTileThreads. Thread (ty, tx) owns rows
// ty*4..+3 and weight rows tx*4..+3 of the tile (so a SwiGLU pair never straddles threads).
template <typename TIn, typename TOut, W4Format F, Epilogue EP>
__global__ void __launch_bounds__(kTileThreads) w4_tiled_kernel(W4Problem p, TIn const* x, TOut* y)
{
    __shared__ __align__(16) float xs[32][kTileM + 4];
    __shared__ __align__(16) float ws[32][kTileN + 4];
    __shared__ int xrow_s[kTileM];
    int g, r0, r1;
    if (!tiled_group(p, blockIdx.y, g, r0, r1))
        return;
    int const tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    int const n_base = blockIdx.x * kTileN;
    int const kb_count = p.K / 32;
    if (tid < kTileM)
        xrow_s[tid] = r0 + tid < r1 ? map_row(p.groups.in_rows, r0 + tid) : -1;
    float acc[4][4] = {};
    // loaders: x tile = 64 rows x 32 k (8 consecutive k per thread); w tile = 64 rows x 16 bytes
    int const lrow = tid / 4, lseg = tid % 4;
    size_t const wrow = static_cast<size_t>(g) * p.N + n_base + lrow;
    bool const wvalid = n_base + lrow < p.N;
    __syncthreads();
    // Register prefetch: the global loads of step kb+1 are in flight during step kb's FMAs.
    int const xr = xrow_s[lrow];
    TileFetch<TIn, F> f{p.blocks, p.scales, x, p.K, xr, lseg, kb_count, wrow, wvalid};
    f.fetch(0);
    for (int kb = 0; kb < kb_count; ++kb)
    {
        float wv[8];
        f.decode(wv);
#pragma unroll
        for (int i = 0; i < 8; ++i)
        {
            xs[lseg * 8 + i][lrow] = f.xv[i];
            ws[lseg * 8 + i][lrow] = wv[i];
        }
        __syncthreads();
        if (kb + 1 < kb_count)
            f.fetch(kb + 1);
#pragma unroll 8
        for (int k = 0; k < 32; ++k)
        {
            float4 a = *reinterpret_cast<float4 const*>(&xs[k][ty * 4]);
            float4 b = *reinterpret_cast<float4 const*>(&ws[k][tx * 4]);
            float const av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        int const r = r0 + ty * 4 + i;
        if (r >= r1)
            break;
        int const out_row = map_row(p.groups.out_rows, r);
#pragma unroll
        for (int j = 0; j < 4; j += 2)
        {
            int const n0 = n_base + tx * 4 + j;
            if (n0 < p.N)
                store_pair<TOut, EP>(p, y, out_row, n0, acc[i][j], acc[i][j + 1], g, n0 + 1 < p.N);
        }
    }
}

// Host-side launch of either path; returns the launch status. grid_y: group slots (GEMV) or
// tile slots (tiled), an upper bound when groups are device-resident (<= kMaxGridY).
template <typename TIn, typename TOut, W4Format F, Epilogue EP>
inline cudaError_t launch_w4(W4Problem const& p, TIn const* x, TOut* y, bool gemv, int grid_y, cudaStream_t stream)
{
    if (gemv)
        return launch(w4_gemv_kernel<TIn, TOut, F, EP>, dim3((p.N / 2 + p.N % 2 + kGemvWarps - 1) / kGemvWarps, grid_y),
            dim3(32 * kGemvWarps), stream, p, x, y);
    return launch(w4_tiled_kernel<TIn, TOut, F, EP>, dim3((p.N + kTileN - 1) / kTileN, grid_y), dim3(kTileThreads),
        stream, p, x, y);
}

} // namespace gpe
