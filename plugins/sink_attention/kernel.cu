// SinkAttention kernels: RoPE of new keys, chunked online-softmax attention with sinks, split
// merge, KV cache write. Layouts in kernel.h.
#include "kernel.h"

#include "../common/cuda_check.h"
#include "../common/launch_utils.h"
#include "../common/numeric.cuh"

#include <limits.h>
#include <math.h>

namespace gpe
{
namespace
{

constexpr int kThreads = 128;      // attention block
constexpr int kChunk = 32;         // keys per shared-memory chunk (one per lane in the softmax)
constexpr int kMaxGroup = 16;      // query heads per kv head
constexpr int kMaxSplits = 64;
constexpr int kTargetBlocks = 256; // automatic split aims at this many attention blocks
constexpr int kMinSplitKeys = 64;  // ... but gives each split at least this many of the keys a row can see

struct AttnShape
{
    int B, S, H, KVH, D, C, window, P;
    float scale;
};

struct AttnTensors
{
    void const *q, *k, *v;
    float const *sinks, *cos, *sin;
    void const *past_k, *past_v;
    int32_t const *past_len, *new_len;
    void *out, *present_k, *present_v;
};

int auto_splits(int rows, int kvh) // rows = B*S
{
    int const blocks = rows * kvh;
    return blocks >= kTargetBlocks ? 1 : min(kMaxSplits / 2, (kTargetBlocks + blocks - 1) / blocks);
}

// max_keys: keys a query row can see at most (window for a ring, else the capacity C). A
// 128-key window split 32 ways gave 4-key splits, each paying a full pass of barriers and a
// partial write for almost no work; the launcher passes it, the workspace sizing (an upper
// bound) does not.
int splits_for(int rows, int kvh, int forced, int max_keys = INT_MAX)
{
    if (forced > 0)
        return forced;
    int const by_keys = max_keys / kMinSplitKeys + (max_keys % kMinSplitKeys != 0);
    return max(1, min(auto_splits(rows, kvh), by_keys));
}

// Workspace: rope'd new keys [B, S, KVH, D] (stored as fp32-sized slots of T), then split
// partials [splits, B*S, H, D + 2] (acc..., m, l) when splits > 1.
size_t partial_floats(int rows, int H, int D, int splits) { return splits > 1 ? size_t(splits) * rows * H * (D + 2) : 0; }

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7fc00000); }

// A row whose lengths break the contract (past_len < 0, new_len outside [0, S], or a full cache
// without room for past_len + new_len) is not computed: its outputs are NaN (loud, like a
// position outside the RoPE tables) and its cache is left as it was, so no kernel reads or
// writes outside the C slots. The lengths live on the device: the host cannot check them
// without a synchronization.
__device__ __forceinline__ bool row_ok(AttnShape const& sh, AttnTensors const& t, int b)
{
    int const pl = t.past_len[b], nl = t.new_len[b];
    return pl >= 0 && nl >= 0 && nl <= sh.S && (sh.window > 0 || static_cast<long long>(pl) + nl <= sh.C);
}

// k_rot[b, s, kvh, :] = RoPE(key[b, s, kvh, :], past_len[b] + s), rounded to T like the cache.
// grid (B*S, KVH), block D/2: thread i rotates the pair (i, i + D/2).
template <typename T>
__global__ void rope_keys_kernel(AttnShape sh, AttnTensors t, T* k_rot)
{
    int const bs = blockIdx.x, b = bs / sh.S, s = bs % sh.S, kvh = blockIdx.y, i = threadIdx.x, half = sh.D / 2;
    if (!row_ok(sh, t, b) || s >= t.new_len[b])
        return;
    int const pos = t.past_len[b] + s;
    size_t const base = (static_cast<size_t>(bs) * sh.KVH + kvh) * sh.D;
    T const* src = static_cast<T const*>(t.k) + base;
    float const x1 = to_float(src[i]), x2 = to_float(src[i + half]);
    bool const ok = pos < sh.P;
    float const c = ok ? t.cos[static_cast<size_t>(pos) * half + i] : nan_f();
    float const sn = ok ? t.sin[static_cast<size_t>(pos) * half + i] : nan_f();
    // Each product and sum rounded once (no FMA contraction): the stored keys are reproducible
    // bit for bit on the host, which the GPU check relies on (plugins/gpucheck/refs.py kernel_keys).
    k_rot[base + i] = from_float<T>(__fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, sn)));
    k_rot[base + i + half] = from_float<T>(__fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, sn)));
}

// grid (B*S, KVH, splits), block kThreads (B*S on x: gridDim.y/z stop at 65535). One block: the
// G = H/KVH query heads of kv head `kvh` for query row (b, s), keys [k_begin, k_end) of its
// visible range.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_kernel(
    AttnShape sh, AttnTensors t, T const* k_rot, float* partials, int splits)
{
    constexpr int kOut = (kMaxGroup * D + kThreads - 1) / kThreads;
    __shared__ float q_s[kMaxGroup][D];
    __shared__ float k_s[kChunk][D + 1];
    __shared__ float v_s[kChunk][D + 1];
    __shared__ float p_s[kMaxGroup][kChunk];
    __shared__ float m_s[kMaxGroup], l_s[kMaxGroup], alpha_s[kMaxGroup];

    int const bs = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    int const b = bs / sh.S, s = bs % sh.S, G = sh.H / sh.KVH, tid = threadIdx.x;
    int const half = D / 2;
    size_t const out_base = static_cast<size_t>(bs) * sh.H * D + static_cast<size_t>(kvh) * G * D;
    bool const valid = row_ok(sh, t, b);
    if (!valid || s >= t.new_len[b])
    {
        if (splits == 1) // padded query row: zeros; bad row: NaN (the merge kernel does this when split)
            for (int o = tid; o < G * D; o += kThreads)
                static_cast<T*>(t.out)[out_base + o] = from_float<T>(valid ? 0.f : nan_f());
        return;
    }
    int const pl = t.past_len[b], qp = pl + s;
    int const lo = sh.window > 0 ? max(0, qp - sh.window + 1) : 0;
    int const n_keys = qp - lo + 1, per_split = (n_keys + splits - 1) / splits;
    int const k_begin = lo + split * per_split, k_end = min(qp + 1, k_begin + per_split);

    // q: RoPE at qp, times scale (fp32)
    bool const ok = qp < sh.P;
    T const* q = static_cast<T const*>(t.q) + out_base;
    for (int o = tid; o < G * D; o += kThreads)
    {
        int const h = o / D, d = o % D, i = d % half;
        float const x1 = to_float(q[h * D + i]), x2 = to_float(q[h * D + i + half]);
        float const c = ok ? t.cos[static_cast<size_t>(qp) * half + i] : nan_f();
        float const sn = ok ? t.sin[static_cast<size_t>(qp) * half + i] : nan_f();
        q_s[h][d] = (d < half ? x1 * c - x2 * sn : x2 * c + x1 * sn) * sh.scale;
    }
    if (tid < G)
        m_s[tid] = -INFINITY, l_s[tid] = 0.f;
    float acc[kOut] = {};
    __syncthreads();

    size_t const cache_row = (static_cast<size_t>(b) * sh.KVH + kvh) * sh.C;
    T const* pk = static_cast<T const*>(t.past_k);
    T const* pv = static_cast<T const*>(t.past_v);
    T const* nv = static_cast<T const*>(t.v);
    for (int kc = k_begin; kc < k_end; kc += kChunk)
    {
        int const nk = min(kChunk, k_end - kc);
        // 16-byte vectors: a row of D elements is a multiple of 16 bytes for every supported D
        constexpr int kVec = 16 / sizeof(T), kVecPerRow = D / kVec;
        for (int idx = tid; idx < nk * kVecPerRow; idx += kThreads)
        {
            int const j = idx / kVecPerRow, d = (idx % kVecPerRow) * kVec, kp = kc + j;
            T const *ksrc, *vsrc;
            if (kp < pl)
            {
                size_t const slot = sh.window > 0 ? kp % sh.window : kp;
                ksrc = pk + (cache_row + slot) * D + d;
                vsrc = pv + (cache_row + slot) * D + d;
            }
            else
            {
                size_t const row = (static_cast<size_t>(b) * sh.S + (kp - pl)) * sh.KVH + kvh;
                ksrc = k_rot + row * D + d;
                vsrc = nv + row * D + d;
            }
            float kf[kVec], vf[kVec];
            unpack16(__ldg(reinterpret_cast<uint4 const*>(ksrc)), ksrc, kf);
            unpack16(__ldg(reinterpret_cast<uint4 const*>(vsrc)), vsrc, vf);
#pragma unroll
            for (int i = 0; i < kVec; ++i)
                k_s[j][d + i] = kf[i], v_s[j][d + i] = vf[i];
        }
        __syncthreads();
        for (int idx = tid; idx < G * kChunk; idx += kThreads)
        {
            int const h = idx / kChunk, j = idx % kChunk;
            float sc = -INFINITY;
            if (j < nk)
            {
                sc = 0.f;
#pragma unroll 16
                for (int d = 0; d < D; ++d)
                    sc = fmaf(q_s[h][d], k_s[j][d], sc);
            }
            p_s[h][j] = sc;
        }
        __syncthreads();
        for (int h = tid >> 5; h < G; h += kThreads / 32) // online softmax, warp per head
        {
            int const lane = tid & 31;
            float const sc = p_s[h][lane];
            float const m_old = m_s[h], m_new = fmaxf(m_old, warp_max(sc));
            float const e = sc == -INFINITY ? 0.f : expf(sc - m_new);
            float const sum = warp_sum(e);
            p_s[h][lane] = e;
            if (lane == 0)
            {
                float const alpha = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
                l_s[h] = l_s[h] * alpha + sum;
                m_s[h] = m_new;
                alpha_s[h] = alpha;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kOut; ++i)
        {
            int const o = tid + i * kThreads, h = o / D, d = o % D;
            if (o < G * D)
            {
                float a = acc[i] * alpha_s[h];
                for (int j = 0; j < nk; ++j)
                    a = fmaf(p_s[h][j], v_s[j][d], a);
                acc[i] = a;
            }
        }
        __syncthreads();
    }

    if (splits == 1)
    {
#pragma unroll
        for (int i = 0; i < kOut; ++i)
        {
            int const o = tid + i * kThreads, h = o / D;
            if (o >= G * D)
                break;
            float const sink = t.sinks[kvh * G + h], m = m_s[h], mm = fmaxf(m, sink);
            float const keep = expf(m - mm);
            float const denom = l_s[h] * keep + expf(sink - mm);
            static_cast<T*>(t.out)[out_base + o] = from_float<T>(acc[i] * keep / denom);
        }
        return;
    }
    float* part = partials + ((static_cast<size_t>(split) * sh.B * sh.S + bs) * sh.H + kvh * G) * (D + 2);
#pragma unroll
    for (int i = 0; i < kOut; ++i)
    {
        int const o = tid + i * kThreads, h = o / D, d = o % D;
        if (o < G * D)
            part[h * (D + 2) + d] = acc[i];
    }
    if (tid < G)
        part[tid * (D + 2) + D] = m_s[tid], part[tid * (D + 2) + D + 1] = l_s[tid];
}

// Merge split partials with the sink. grid (B*S, H), block D.
template <typename T>
__global__ void merge_kernel(AttnShape sh, AttnTensors t, float const* partials, int splits)
{
    int const bs = blockIdx.x, h = blockIdx.y, d = threadIdx.x, D = sh.D;
    size_t const o = (static_cast<size_t>(bs) * sh.H + h) * D + d;
    bool const valid = row_ok(sh, t, bs / sh.S);
    if (!valid || bs % sh.S >= t.new_len[bs / sh.S])
    {
        static_cast<T*>(t.out)[o] = from_float<T>(valid ? 0.f : nan_f());
        return;
    }
    size_t const stride = static_cast<size_t>(sh.B) * sh.S * sh.H * (D + 2);
    float const* p = partials + (static_cast<size_t>(bs) * sh.H + h) * (D + 2);
    float mm = t.sinks[h];
    for (int i = 0; i < splits; ++i)
        mm = fmaxf(mm, p[i * stride + D]);
    float num = 0.f, denom = expf(t.sinks[h] - mm);
    for (int i = 0; i < splits; ++i)
    {
        float const m = p[i * stride + D];
        float const w = m == -INFINITY ? 0.f : expf(m - mm);
        num += p[i * stride + d] * w;
        denom += p[i * stride + D + 1] * w;
    }
    static_cast<T*>(t.out)[o] = from_float<T>(num / denom);
}

// present[b, kvh, slot(pos), :] = k_rot / value for valid new tokens; for a ring only the last
// `window` tokens (the ones that survive). grid (B*S, KVH), block D.
template <typename T>
__global__ void cache_write_kernel(AttnShape sh, AttnTensors t, T const* k_rot)
{
    int const bs = blockIdx.x, b = bs / sh.S, s = bs % sh.S, kvh = blockIdx.y, d = threadIdx.x;
    int const nl = t.new_len[b];
    if (!row_ok(sh, t, b) || s >= nl || (sh.window > 0 && s < nl - sh.window))
        return;
    int const pos = t.past_len[b] + s;
    int const slot = sh.window > 0 ? pos % sh.window : pos; // < C: row_ok
    size_t const src = (static_cast<size_t>(bs) * sh.KVH + kvh) * sh.D + d;
    size_t const dst = ((static_cast<size_t>(b) * sh.KVH + kvh) * sh.C + slot) * sh.D + d;
    static_cast<T*>(t.present_k)[dst] = k_rot[src];
    static_cast<T*>(t.present_v)[dst] = static_cast<T const*>(t.v)[src];
}

template <typename T, int D>
int run(AttnShape const& sh, AttnTensors const& t, int splits, void* workspace, cudaStream_t stream)
{
    int const rows = sh.B * sh.S;
    WorkspaceCarver c(workspace);
    T* k_rot = c.take<T>(static_cast<size_t>(rows) * sh.KVH * D);
    float* partials = c.take<float>(partial_floats(rows, sh.H, D, splits));
    GPE_CUDA_TRY(launch(rope_keys_kernel<T>, dim3(rows, sh.KVH), dim3(D / 2), stream, sh, t, k_rot));
    GPE_CUDA_TRY(launch(attention_kernel<T, D>, dim3(rows, sh.KVH, splits), dim3(kThreads), stream, sh, t,
        static_cast<T const*>(k_rot), partials, splits));
    if (splits > 1)
        GPE_CUDA_TRY(launch(merge_kernel<T>, dim3(rows, sh.H), dim3(D), stream, sh, t,
            static_cast<float const*>(partials), splits));
    size_t const cache_bytes = static_cast<size_t>(sh.B) * sh.KVH * sh.C * D * sizeof(T);
    if (t.present_k != t.past_k)
        GPE_CUDA_TRY(cudaMemcpyAsync(t.present_k, t.past_k, cache_bytes, cudaMemcpyDeviceToDevice, stream));
    if (t.present_v != t.past_v)
        GPE_CUDA_TRY(cudaMemcpyAsync(t.present_v, t.past_v, cache_bytes, cudaMemcpyDeviceToDevice, stream));
    GPE_CUDA_TRY(launch(cache_write_kernel<T>, dim3(rows, sh.KVH), dim3(D), stream, sh, t,
        static_cast<T const*>(k_rot)));
    return GPE_OK;
}

template <typename T>
int run_dim(AttnShape const& sh, AttnTensors const& t, int splits, void* ws, cudaStream_t stream)
{
    switch (sh.D)
    {
    case 16: return run<T, 16>(sh, t, splits, ws, stream);
    case 32: return run<T, 32>(sh, t, splits, ws, stream);
    case 64: return run<T, 64>(sh, t, splits, ws, stream);
    case 128: return run<T, 128>(sh, t, splits, ws, stream);
    default: return GPE_ERR_UNSUPPORTED;
    }
}

// B*S rides on gridDim.x (2^31 - 1); KVH and H on gridDim.y (<= 65535).
bool shape_ok(int B, int S, int H, int KVH, int D)
{
    return B >= 0 && S >= 0 && static_cast<long long>(B) * S <= INT_MAX && KVH >= 1 && H >= KVH && H <= 65535
        && H % KVH == 0 && H / KVH <= kMaxGroup && (D == 16 || D == 32 || D == 64 || D == 128);
}

} // namespace
} // namespace gpe

GPE_API size_t gpe_sink_attention_workspace_size(int batch, int seq, int num_heads, int num_kv_heads, int head_dim,
    int num_splits)
{
    using namespace gpe;
    if (!shape_ok(batch, seq, num_heads, num_kv_heads, head_dim) || num_splits < 0 || num_splits > kMaxSplits)
        return 0;
    int const rows = batch * seq;
    // The automatic split count falls as rows grow: size the partials for the worst row count <= rows.
    size_t partial = 0;
    for (int r = 1; r <= rows; ++r)
    {
        int const sp = splits_for(r, num_kv_heads, num_splits);
        size_t const n = partial_floats(r, num_heads, head_dim, sp);
        partial = n > partial ? n : partial;
        if (num_splits == 0 && sp == 1)
            break; // auto: every larger row count uses one split
    }
    return align_up(static_cast<size_t>(rows) * num_kv_heads * head_dim * sizeof(float)) + align_up(partial * sizeof(float));
}

GPE_API int gpe_sink_attention(int dtype, int batch, int seq, int num_heads, int num_kv_heads, int head_dim,
    int cache_capacity, int window, float scale, int max_positions, int num_splits, void const* query,
    void const* key, void const* value, float const* sinks, float const* rope_cos, float const* rope_sin,
    void const* past_key, void const* past_value, int32_t const* past_len, int32_t const* new_len, void* output,
    void* present_key, void* present_value, void* workspace, size_t workspace_size, void* stream)
{
    using namespace gpe;
    GPE_REQUIRE(shape_ok(batch, seq, num_heads, num_kv_heads, head_dim), GPE_ERR_BAD_SHAPE);
    GPE_REQUIRE(window >= 0 && cache_capacity >= 1 && (window == 0 || cache_capacity >= window) && max_positions >= 1,
        GPE_ERR_BAD_SHAPE);
    GPE_REQUIRE(num_splits >= 0 && num_splits <= kMaxSplits, GPE_ERR_UNSUPPORTED);
    if (batch == 0 || seq == 0)
        return GPE_OK;
    GPE_REQUIRE(query && key && value && sinks && rope_cos && rope_sin && past_key && past_value && past_len && new_len
            && output && present_key && present_value && workspace,
        GPE_ERR_NULL_POINTER);
    GPE_REQUIRE(workspace_size
            >= gpe_sink_attention_workspace_size(batch, seq, num_heads, num_kv_heads, head_dim, num_splits),
        GPE_ERR_WORKSPACE_TOO_SMALL);
    // 128-bit loads of cache rows, this step's values and the RoPE'd keys in the workspace (a row
    // of D elements is a multiple of 16 bytes for every supported D).
    GPE_REQUIRE(aligned(value) && aligned(past_key) && aligned(past_value) && aligned(workspace), GPE_ERR_MISALIGNED);
    AttnShape const sh{batch, seq, num_heads, num_kv_heads, head_dim, cache_capacity, window, max_positions, scale};
    AttnTensors const t{query, key, value, sinks, rope_cos, rope_sin, past_key, past_value, past_len, new_len, output,
        present_key, present_value};
    int const splits = splits_for(batch * seq, num_kv_heads, num_splits, window > 0 ? window : cache_capacity);
    auto const s = static_cast<cudaStream_t>(stream);
    return dispatch_dtype(dtype, [&](auto tag) -> int { return run_dim<decltype(tag)>(sh, t, splits, workspace, s); });
}
