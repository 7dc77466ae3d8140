// CUDA error checking without exceptions: launchers return the first failing cudaError_t.
#pragma once
#include <cuda_runtime.h>

#include <utility>

// Evaluate a CUDA runtime call; on failure return its code (a positive int) from the caller.
#define GPE_CUDA_TRY(call)                                                                        \
    do {                                                                                          \
        cudaError_t gpe_err_ = (call);                                                            \
        if (gpe_err_ != cudaSuccess) return static_cast<int>(gpe_err_);                           \
    } while (0)

// Return a GPE_ERR_* code from the caller when a precondition fails.
#define GPE_REQUIRE(cond, code)                                                                   \
    do {                                                                                          \
        if (!(cond)) return static_cast<int>(code);                                               \
    } while (0)

namespace gpe
{
// Launch kernel<<<grid, block, 0, stream>>>(args...) and return this launch's own status
// (cudaLaunchKernelEx), not whatever an earlier, unrelated call left for cudaGetLastError (a
// `<<<>>>` + cudaGetLastError check would blame this launch for it). A sticky error of an
// earlier asynchronous fault is still returned: the context can run nothing after it.
// Use: GPE_CUDA_TRY(launch(kernel<T>, grid, block, stream, args...)).
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}
} // namespace gpe
