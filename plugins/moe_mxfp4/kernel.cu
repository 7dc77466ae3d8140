// MoeMxfp4 kernels: routing, grouping by expert, and the two W4 GEMMs via common/w4_gemm.cuh.
#include "kernel.h"

#include "../common/cuda_check.h"
#include "../common/launch_utils.h"
#include "../common/w4_gemm_mma.cuh"

#include <limits.h>
#include <math.h>

namespace gpe
{
namespace
{

constexpr int kRouterThreads = 128;
constexpr int kGroupThreads = 1024;
constexpr int kMaxExperts = 1024;
constexpr int kMaxTopK = 32;

// Workspace of one chunk of `tokens` tokens (same carving for sizing and for use).
struct MoeWorkspace
{
    float* logits;     // [tokens, E]
    int* topk_idx;     // [tokens * k], per token descending by logit
    float* topk_w;     // [tokens * k], softmax over the selected
    int* offsets;      // [E + 1] grouped rows of expert e: [offsets[e], offsets[e+1])
    int* active;       // [E] experts with rows, ascending
    int* counters;     // [2] = num_active, num_tiles
    int* tile_group;   // [max_tiles]
    int* tile_row0;    // [max_tiles]
    int* entry_of_row; // [tokens * k] grouped row -> entry (token * k + slot)
    int* token_of_row; // [tokens * k] grouped row -> token
    float* act;        // [tokens * k, I] SwiGLU output per grouped row
    float* y;          // [tokens * k, H] expert output per entry (bias added, not yet weighted)
    int max_tiles;
};

int max_tiles(int tokens, int k, int E) { return (tokens * k + kTileM - 1) / kTileM + E; }

MoeWorkspace carve(WorkspaceCarver& c, int tokens, int E, int k, int H, int I)
{
    MoeWorkspace w{};
    size_t const entries = static_cast<size_t>(tokens) * k;
    w.max_tiles = max_tiles(tokens, k, E);
    w.logits = c.take<float>(static_cast<size_t>(tokens) * E);
    w.topk_idx = c.take<int>(entries);
    w.topk_w = c.take<float>(entries);
    w.offsets = c.take<int>(E + 1);
    w.active = c.take<int>(E);
    w.counters = c.take<int>(2);
    w.tile_group = c.take<int>(w.max_tiles);
    w.tile_row0 = c.take<int>(w.max_tiles);
    w.entry_of_row = c.take<int>(entries);
    w.token_of_row = c.take<int>(entries);
    w.act = c.take<float>(entries * I);
    w.y = c.take<float>(entries * H);
    return w;
}

// logits[t, e] = hidden[t] . router_weight[e] + router_bias[e] in fp32. One block per
// (expert, token): at decode the router's E*H*4 bytes are spread over E blocks (a warp per
// expert would be latency-bound), 16-byte weight loads. grid (E, tokens), block kRouterThreads.
template <typename T>
__global__ void __launch_bounds__(kRouterThreads) router_logits_kernel(
    T const* hidden, float const* rw, float const* rb, int H, int E, float* logits)
{
    __shared__ float partial[kRouterThreads / 32];
    int const e = blockIdx.x, t = blockIdx.y;
    T const* h = hidden + static_cast<size_t>(t) * H;
    float4 const* w = reinterpret_cast<float4 const*>(rw + static_cast<size_t>(e) * H);
    float s = 0.f;
    for (int i = threadIdx.x; i < H / 4; i += kRouterThreads)
    {
        float4 const wv = __ldg(w + i);
        s = fmaf(wv.x, to_float(h[4 * i]), s);
        s = fmaf(wv.y, to_float(h[4 * i + 1]), s);
        s = fmaf(wv.z, to_float(h[4 * i + 2]), s);
        s = fmaf(wv.w, to_float(h[4 * i + 3]), s);
    }
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0)
        partial[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        float total = 0.f;
        for (int i = 0; i < kRouterThreads / 32; ++i)
            total += partial[i];
        logits[static_cast<size_t>(t) * E + e] = total + __ldg(rb + e);
    }
}

// Top-k (descending logit, ties: lower expert first, NaN ranks lowest) and softmax over the
// selected, one warp per token: lane l holds experts l, l+32, ...; k rounds of a warp argmax.
__device__ void warp_top_k(float const* logits, int E, int k, int* idx, float* w)
{
    constexpr int kSlots = kMaxExperts / 32;
    int const lane = threadIdx.x & 31;
    uint32_t taken = 0; // bit i: expert i*32+lane already selected
    float chosen[kMaxTopK];
    for (int j = 0; j < k; ++j)
    {
        float best_v = -INFINITY;
        int best_e = INT_MAX;
        for (int i = 0; i < kSlots && i * 32 < E; ++i)
        {
            int const e = i * 32 + lane;
            if (e >= E || (taken >> i) & 1u)
                continue;
            float v = logits[e];
            v = isnan(v) ? -INFINITY : v;
            if (v > best_v || (v == best_v && e < best_e))
                best_v = v, best_e = e;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
        {
            float const ov = __shfl_xor_sync(0xffffffffu, best_v, o);
            int const oe = __shfl_xor_sync(0xffffffffu, best_e, o);
            if (ov > best_v || (ov == best_v && oe < best_e))
                best_v = ov, best_e = oe;
        }
        if (best_e % 32 == lane)
            taken |= 1u << (best_e / 32);
        chosen[j] = best_v;
        if (lane == 0)
            idx[j] = best_e;
    }
    if (lane == 0)
    {
        float sum = 0.f;
        for (int j = 0; j < k; ++j)
            sum += (chosen[j] = expf(chosen[j] - chosen[0]));
        for (int j = 0; j < k; ++j)
            w[j] = chosen[j] / sum;
    }
}

// Rows of `seq` tokens, row b holding new_len[b] real ones (the op set's MoeMxfp4 new_len);
// every token is real when new_len is null. t is the token's index in the whole call.
struct RealTokens
{
    int seq;
    int const* new_len;

    __device__ bool operator()(int t) const
    {
        return new_len == nullptr || t % seq < __ldg(new_len + t / seq);
    }
};

// One block: top-k per token, rows per expert, grouped-row maps, GEMV slots and tile list.
// Padded tokens get expert -1 in every slot: no rows, no tiles, zeros from the combine.
__global__ void __launch_bounds__(kGroupThreads) group_kernel(
    int tokens, int t0, RealTokens real, int E, int k, MoeWorkspace w)
{
    __shared__ int count[kMaxExperts];
    __shared__ int cursor[kMaxExperts];
    int const entries = tokens * k;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        count[e] = 0;
    for (int t = threadIdx.x / 32; t < tokens; t += blockDim.x / 32) // warp-uniform loop
    {
        if (real(t0 + t))
            warp_top_k(w.logits + static_cast<size_t>(t) * E, E, k, w.topk_idx + t * k, w.topk_w + t * k);
        else
            for (int j = threadIdx.x & 31; j < k; j += 32)
                w.topk_idx[t * k + j] = -1, w.topk_w[t * k + j] = 0.f;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < entries; i += blockDim.x)
        if (w.topk_idx[i] >= 0)
            atomicAdd(&count[w.topk_idx[i]], 1);
    __syncthreads();
    if (threadIdx.x == 0)
    {
        int row = 0, n_active = 0, n_tiles = 0;
        for (int e = 0; e < E; ++e)
        {
            w.offsets[e] = row;
            cursor[e] = row;
            if (count[e] > 0)
                w.active[n_active++] = e;
            for (int r = 0; r < count[e]; r += kTileM)
            {
                w.tile_group[n_tiles] = e;
                w.tile_row0[n_tiles++] = row + r;
            }
            row += count[e];
        }
        w.offsets[E] = row;
        w.counters[0] = n_active;
        w.counters[1] = n_tiles;
    }
    __syncthreads();
    // Order inside an expert's rows is arbitrary; every row is computed independently and the
    // combine sums slots in fixed order, so results are deterministic.
    for (int i = threadIdx.x; i < entries; i += blockDim.x)
    {
        if (w.topk_idx[i] < 0)
            continue;
        int const r = atomicAdd(&cursor[w.topk_idx[i]], 1);
        w.entry_of_row[r] = i;
        w.token_of_row[r] = i / k;
    }
}

// out[t, h] = sum_j topk_w[t, j] * y[t * k + j, h], 0 for a padded token (its y rows were never
// written); grid (ceil(H / 256), tokens).
template <typename T>
__global__ void combine_kernel(MoeWorkspace w, int k, int H, T* out)
{
    int const h = blockIdx.x * blockDim.x + threadIdx.x;
    int const t = blockIdx.y;
    if (h >= H)
        return;
    bool const padded = w.topk_idx[t * k] < 0;
    float s = 0.f;
    for (int j = 0; j < k && !padded; ++j)
        s = fmaf(w.topk_w[t * k + j], w.y[(static_cast<size_t>(t) * k + j) * H + h], s);
    out[static_cast<size_t>(t) * H + h] = from_float<T>(s);
}

struct MoeArgs
{
    int E, k, H, I;
    SwigluParams swiglu;
    float const *router_weight, *router_bias;
    uint8_t const *gu_blocks, *gu_scales;
    float const* gu_bias;
    uint8_t const *dn_blocks, *dn_scales;
    float const* dn_bias;
};

template <typename T>
int run_chunk(MoeArgs const& a, int tokens, int t0, RealTokens real, int path, T const* hidden, T* out,
    MoeWorkspace const& w, cudaStream_t stream)
{
    GPE_CUDA_TRY(launch(router_logits_kernel<T>, dim3(a.E, tokens), dim3(kRouterThreads), stream, hidden,
        a.router_weight, a.router_bias, a.H, a.E, w.logits));
    GPE_CUDA_TRY(launch(group_kernel, dim3(1), dim3(kGroupThreads), stream, tokens, t0, real, a.E, a.k, w));

    W4Groups groups{w.offsets, w.active, w.counters, w.tile_group, w.tile_row0, w.counters + 1, nullptr, nullptr};
    bool const gemv = path == GPE_PATH_GEMV;
    int const grid_y = gemv ? min(a.E, tokens * a.k) : max_tiles(tokens, a.k, a.E);

    W4Problem gu{a.gu_blocks, a.gu_scales, a.gu_bias, 2 * a.I, a.H, 0, a.I, a.swiglu, groups};
    gu.groups.in_rows = w.token_of_row; // gathered tokens; act rows stay in grouped order
    W4Problem dn{a.dn_blocks, a.dn_scales, a.dn_bias, a.H, a.I, 0, a.H, a.swiglu, groups};
    dn.groups.out_rows = w.entry_of_row; // scatter back to (token, slot) order
    bool mma = false;
    if constexpr (kHasMma<T>)
    {
        mma = path == GPE_PATH_MMA;
        if (mma)
        {
            GPE_CUDA_TRY((launch_w4_mma<T, T, float, W4Format::kMxfp4, Epilogue::kSwiglu>(gu, hidden, w.act, grid_y,
                stream)));
            GPE_CUDA_TRY((launch_w4_mma<T, float, float, W4Format::kMxfp4, Epilogue::kBias>(dn, w.act, w.y, grid_y,
                stream)));
        }
    }
    if (!mma)
    {
        GPE_CUDA_TRY((launch_w4<T, float, W4Format::kMxfp4, Epilogue::kSwiglu>(gu, hidden, w.act, gemv, grid_y, stream)));
        GPE_CUDA_TRY((launch_w4<float, float, W4Format::kMxfp4, Epilogue::kBias>(dn, w.act, w.y, gemv, grid_y, stream)));
    }

    GPE_CUDA_TRY(launch(combine_kernel<T>, dim3((a.H + 255) / 256, tokens), dim3(256), stream, w, a.k, a.H, out));
    return GPE_OK;
}

bool shape_ok(int tokens, int E, int k, int H, int I)
{
    return tokens >= 0 && E >= 1 && E <= kMaxExperts && k >= 1 && k <= kMaxTopK && k <= E && H >= 32
        && H % 32 == 0 && I >= 32 && I % 32 == 0;
}

} // namespace
} // namespace gpe

GPE_API size_t gpe_moe_mxfp4_workspace_size(int tokens, int num_experts, int top_k, int hidden_size,
    int intermediate_size)
{
    if (!gpe::shape_ok(tokens, num_experts, top_k, hidden_size, intermediate_size))
        return 0;
    int const chunk = tokens < GPE_MOE_CHUNK_TOKENS ? (tokens > 0 ? tokens : 1) : GPE_MOE_CHUNK_TOKENS;
    gpe::WorkspaceCarver c(nullptr);
    gpe::carve(c, chunk, num_experts, top_k, hidden_size, intermediate_size);
    return c.used();
}

GPE_API int gpe_moe_mxfp4(int dtype, int path, int tokens, int num_experts, int top_k, int hidden_size,
    int intermediate_size, float swiglu_limit, float swiglu_alpha, float swiglu_linear_offset, void const* hidden,
    int batch, int const* new_len, float const* router_weight, float const* router_bias, uint8_t const* gate_up_blocks,
    uint8_t const* gate_up_scales, float const* gate_up_bias, uint8_t const* down_blocks,
    uint8_t const* down_scales, float const* down_bias, void* output, void* workspace, size_t workspace_size,
    void* stream)
{
    using namespace gpe;
    GPE_REQUIRE(shape_ok(tokens, num_experts, top_k, hidden_size, intermediate_size), GPE_ERR_BAD_SHAPE);
    GPE_REQUIRE(path >= GPE_PATH_AUTO && path <= GPE_PATH_MMA, GPE_ERR_UNSUPPORTED);
    GPE_REQUIRE(path != GPE_PATH_MMA || dtype != GPE_DTYPE_FLOAT32, GPE_ERR_UNSUPPORTED);
    GPE_REQUIRE(new_len == nullptr || (batch >= 1 && tokens % batch == 0), GPE_ERR_BAD_SHAPE);
    if (tokens == 0)
        return GPE_OK;
    GPE_REQUIRE(hidden && router_weight && router_bias && gate_up_blocks && gate_up_scales && gate_up_bias
            && down_blocks && down_scales && down_bias && output && workspace,
        GPE_ERR_NULL_POINTER);
    GPE_REQUIRE(workspace_size
            >= gpe_moe_mxfp4_workspace_size(tokens, num_experts, top_k, hidden_size, intermediate_size),
        GPE_ERR_WORKSPACE_TOO_SMALL);
    // 128-bit loads: hidden rows (H % 32 == 0 keeps every row aligned), router rows, weight
    // blocks, and the fp32 SwiGLU rows carved from the workspace.
    GPE_REQUIRE(aligned(hidden) && aligned(router_weight) && aligned(gate_up_blocks) && aligned(down_blocks)
            && aligned(workspace),
        GPE_ERR_MISALIGNED);
    if (path == GPE_PATH_AUTO)
        path = tokens <= GPE_MOE_GEMV_MAX_TOKENS ? GPE_PATH_GEMV : GPE_PATH_TILED;
    MoeArgs const a{num_experts, top_k, hidden_size, intermediate_size,
        SwigluParams{swiglu_limit, swiglu_alpha, swiglu_linear_offset}, router_weight, router_bias, gate_up_blocks,
        gate_up_scales, gate_up_bias, down_blocks, down_scales, down_bias};
    int const chunk = tokens < GPE_MOE_CHUNK_TOKENS ? tokens : GPE_MOE_CHUNK_TOKENS;
    WorkspaceCarver c(workspace);
    MoeWorkspace const w = carve(c, chunk, num_experts, top_k, hidden_size, intermediate_size);
    auto const s = static_cast<cudaStream_t>(stream);
    return dispatch_dtype(dtype, [&](auto tag) -> int {
        using T = decltype(tag);
        for (int t0 = 0; t0 < tokens; t0 += chunk)
        {
            int const n = tokens - t0 < chunk ? tokens - t0 : chunk;
            size_t const off = static_cast<size_t>(t0) * hidden_size;
            RealTokens const real{new_len ? tokens / batch : 1, new_len};
            int rc = run_chunk<T>(
                a, n, t0, real, path, static_cast<T const*>(hidden) + off, static_cast<T*>(output) + off, w, s);
            if (rc != GPE_OK)
                return rc;
        }
        return GPE_OK;
    });
}
