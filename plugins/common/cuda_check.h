// CUDA error checking without exceptions: launchers return the first failing cudaError_t.
#pragma once
#include <cuda_runtime.h>

// Evaluate a CUDA runtime call; on failure return its code (a positive int) from the caller.
#define GPE_CUDA_TRY(call)                                                                        \
    do {                                                                                          \
        cudaError_t gpe_err_ = (call);                                                            \
        if (gpe_err_ != cudaSuccess) return static_cast<int>(gpe_err_);                           \
    } while (0)

// After a <<<...>>> launch: configuration errors surface here (asynchronous faults surface at
// the next synchronizing call, as usual for CUDA).
#define GPE_LAUNCH_CHECK() GPE_CUDA_TRY(cudaGetLastError())

// Return a GPE_ERR_* code from the caller when a precondition fails.
#define GPE_REQUIRE(cond, code)                                                                   \
    do {                                                                                          \
        if (!(cond)) return static_cast<int>(code);                                               \
    } while (0)
