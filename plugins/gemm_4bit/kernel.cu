// Gemm4bit: one dense group through the shared W4 kernels of common/w4_gemm.cuh.
#include "kernel.h"

#include "../common/cuda_check.h"
#include "../common/launch_utils.h"
#include "../common/w4_gemm_mma.cuh"

namespace gpe
{
namespace
{

// The tiled grid's y dimension is limited to kMaxGridY tiles of kTileM rows per launch.
constexpr int64_t kMaxRowsPerLaunch = static_cast<int64_t>(kMaxGridY) * kTileM;

template <typename T, W4Format F>
int run(int64_t rows, int K, int N, int path, T const* x, uint8_t const* blocks, void const* scales,
    float const* bias, T* y, cudaStream_t stream)
{
    bool const gemv = path == GPE_PATH_GEMV;
    if constexpr (!kHasMma<T> || !kMmaFormat<F>)
        GPE_REQUIRE(path != GPE_PATH_MMA, GPE_ERR_UNSUPPORTED);
    int64_t const step = gemv ? GPE_GEMM4BIT_GEMV_MAX_ROWS : kMaxRowsPerLaunch;
    for (int64_t r0 = 0; r0 < rows; r0 += step)
    {
        int const m = static_cast<int>(rows - r0 < step ? rows - r0 : step);
        W4Problem p{blocks, scales, bias, N, K, m, N, SwigluParams{}, W4Groups{}};
        int const grid_y = gemv ? 1 : (m + kTileM - 1) / kTileM;
        if constexpr (kHasMma<T> && kMmaFormat<F>)
            if (path == GPE_PATH_MMA)
            {
                GPE_CUDA_TRY((launch_w4_mma<T, T, T, F, Epilogue::kBias>(p, x + r0 * K, y + r0 * N, grid_y, stream)));
                continue;
            }
        GPE_CUDA_TRY((launch_w4<T, T, F, Epilogue::kBias>(p, x + r0 * K, y + r0 * N, gemv, grid_y, stream)));
    }
    return GPE_OK;
}

} // namespace
} // namespace gpe

GPE_API int gpe_gemm_4bit(int dtype, int format, int path, int64_t rows, int in_features, int out_features,
    void const* input, uint8_t const* weight_blocks, void const* weight_scales, float const* bias, void* output,
    void* stream)
{
    using namespace gpe;
    GPE_REQUIRE(rows >= 0 && in_features >= 32 && in_features % 32 == 0 && out_features >= 1, GPE_ERR_BAD_SHAPE);
    GPE_REQUIRE(format == GPE_W4_MXFP4 || format == GPE_W4_INT4, GPE_ERR_UNSUPPORTED);
    GPE_REQUIRE(path >= GPE_PATH_AUTO && path <= GPE_PATH_MMA, GPE_ERR_UNSUPPORTED);
    if (rows == 0)
        return GPE_OK;
    GPE_REQUIRE(input && weight_blocks && weight_scales && output, GPE_ERR_NULL_POINTER);
    // 128-bit loads of input rows (K % 32 == 0 keeps every row aligned) and weight blocks; fp16 scales.
    GPE_REQUIRE(aligned(input) && aligned(weight_blocks) && (format != GPE_W4_INT4 || aligned(weight_scales, 2)),
        GPE_ERR_MISALIGNED);
    if (path == GPE_PATH_AUTO)
        path = rows <= GPE_GEMM4BIT_GEMV_MAX_ROWS ? GPE_PATH_GEMV : GPE_PATH_TILED;
    auto const s = static_cast<cudaStream_t>(stream);
    return dispatch_dtype(dtype, [&](auto tag) -> int {
        using T = decltype(tag);
        auto const* x = static_cast<T const*>(input);
        auto* y = static_cast<T*>(output);
        return format == GPE_W4_MXFP4
            ? run<T, W4Format::kMxfp4>(rows, in_features, out_features, path, x, weight_blocks, weight_scales, bias, y, s)
            : run<T, W4Format::kInt4>(rows, in_features, out_features, path, x, weight_blocks, weight_scales, bias, y, s);
    });
}
