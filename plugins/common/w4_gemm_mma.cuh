// Tensor-core variant of the tiled W4A16 kernel (GPE_PATH_MMA): same tiles, row maps and
// epilogues as w4_tiled_kernel (w4_gemm.cuh), but each 64x64x32 step runs on WMMA 16x16x16
// fragments with fp16/bf16 operands and fp32 accumulation. The 4-bit weights are dequantized
// (value * block scale) into shared memory in the node's activation type TMma. MXFP4 only: an
// E2M1 value has 2 significant bits and an E8M0 scale is a power of two, so the product is exact
// in bf16 for every scale and in fp16 for 104 <= s <= 140 (|w| inside fp16's range, no
// subnormal rounding). int4 is kept off this path (kMmaFormat): q * fp16 scale needs up to 15
// significant bits, which bf16 (8) and fp16 (11) would round before the MMA.
// Activations are rounded to TMma when they are not already (the MoE down projection reads fp32
// SwiGLU outputs): the one numerical difference from the SIMT path. Opt-in until tier 2
// (plugins/gpu_check.py) has validated it on a GPU.
#pragma once
#include "w4_gemm.cuh"

#include <mma.h>
#include <type_traits>

namespace gpe
{

constexpr int kMmaLd = 32 + 8;        // smem row stride (elements) of the 16-bit A/B tiles
constexpr int kMmaLdC = kTileN + 4;   // smem row stride (floats) of the accumulator tile

template <typename TMma>
__device__ __forceinline__ void store8(TMma* dst, float const* v)
{
    alignas(16) TMma tmp[8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
        tmp[i] = from_float<TMma>(v[i]);
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<uint4 const*>(tmp);
}

// grid: x = ceil(N / kTileN), y = tiles; block: kTileThreads (8 warps). Warp w owns output rows
// (w/2)*16..+15 and columns (w%2)*32..+31 (two 16x16 accumulators).
template <typename TIn, typename TMma, typename TOut, W4Format F, Epilogue EP>
__global__ void __launch_bounds__(kTileThreads) w4_mma_kernel(W4Problem p, TIn const* x, TOut* y)
{
    namespace wmma = nvcuda::wmma;
    __shared__ __align__(32) TMma a_s[kTileM][kMmaLd]; // activations [row][k]
    __shared__ __align__(32) TMma b_s[kTileN][kMmaLd]; // weights [n][k] (= col-major K x N)
    __shared__ __align__(32) float c_s[kTileM][kMmaLdC];
    __shared__ int xrow_s[kTileM];
    int g, r0, r1;
    if (!tiled_group(p, blockIdx.y, g, r0, r1))
        return;
    int const tid = threadIdx.x, warp = tid / 32;
    int const n_base = blockIdx.x * kTileN;
    int const kb_count = p.K / 32;
    if (tid < kTileM)
        xrow_s[tid] = r0 + tid < r1 ? map_row(p.groups.in_rows, r0 + tid) : -1;
    int const lrow = tid / 4, lseg = tid % 4;
    size_t const wrow = static_cast<size_t>(g) * p.N + n_base + lrow;
    bool const wvalid = n_base + lrow < p.N;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.f);
    wmma::fill_fragment(acc[1], 0.f);
    __syncthreads();

    int const xr = xrow_s[lrow];
    TileFetch<TIn, F> f{p.blocks, p.scales, x, p.K, xr, lseg, kb_count, wrow, wvalid};
    f.fetch(0);
    int const wm = (warp / 2) * 16, wn = (warp % 2) * 32;
    for (int kb = 0; kb < kb_count; ++kb)
    {
        float wv[8];
        f.decode(wv);
        store8(&a_s[lrow][lseg * 8], f.xv);
        store8(&b_s[lrow][lseg * 8], wv);
        __syncthreads();
        if (kb + 1 < kb_count)
            f.fetch(kb + 1);
#pragma unroll
        for (int k16 = 0; k16 < 32; k16 += 16)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, TMma, wmma::row_major> a;
            wmma::load_matrix_sync(a, &a_s[wm][k16], kMmaLd);
#pragma unroll
            for (int j = 0; j < 2; ++j)
            {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, TMma, wmma::col_major> b;
                wmma::load_matrix_sync(b, &b_s[wn + 16 * j][k16], kMmaLd);
                wmma::mma_sync(acc[j], a, b, acc[j]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&c_s[wm][wn], acc[0], kMmaLdC, wmma::mem_row_major);
    wmma::store_matrix_sync(&c_s[wm][wn + 16], acc[1], kMmaLdC, wmma::mem_row_major);
    __syncthreads();
    int const tx = tid % 16, ty = tid / 16;
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
                store_pair<TOut, EP>(p, y, out_row, n0, c_s[ty * 4 + i][tx * 4 + j], c_s[ty * 4 + i][tx * 4 + j + 1],
                    g, n0 + 1 < p.N);
        }
    }
}

// Tensor-core operand types: fp16 and bf16 (fp32 nodes use the SIMT kernels).
template <typename T>
constexpr bool kHasMma = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
// Weight formats whose dequantized values are exact in the MMA operand type (see the top).
template <W4Format F>
constexpr bool kMmaFormat = F == W4Format::kMxfp4;

template <typename TMma, typename TIn, typename TOut, W4Format F, Epilogue EP>
inline cudaError_t launch_w4_mma(W4Problem const& p, TIn const* x, TOut* y, int grid_y, cudaStream_t stream)
{
    return launch(w4_mma_kernel<TIn, TMma, TOut, F, EP>, dim3((p.N + kTileN - 1) / kTileN, grid_y),
        dim3(kTileThreads), stream, p, x, y);
}

} // namespace gpe
