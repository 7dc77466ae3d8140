// Shared C ABI vocabulary of the kernel launchers (usable from C, C++ and Python ctypes).
// Every launcher returns GPE_OK (0), a negative GPE_ERR_* for bad arguments, or a positive
// cudaError_t value when CUDA failed. Launchers never throw and never synchronize the stream.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define GPE_EXTERN_C extern "C"
#else
#define GPE_EXTERN_C
#endif
#define GPE_API GPE_EXTERN_C __attribute__((visibility("default")))

// Activation dtype of a node ("T" in compiler/opset.py).
enum GpeDtype { GPE_DTYPE_FLOAT32 = 0, GPE_DTYPE_FLOAT16 = 1, GPE_DTYPE_BFLOAT16 = 2 };

// 4-bit weight block format (Gemm4bit attribute `format`).
enum GpeW4Format { GPE_W4_MXFP4 = 0, GPE_W4_INT4 = 1 };

// Kernel path; AUTO picks GEMV or TILED by row count, the others exist so tests cover every
// path on one shape. MMA = the tiled GEMM on tensor cores (fp16/bf16 nodes only; opt-in, not
// chosen by AUTO until plugins/gpu_check.py has validated it on a GPU).
enum GpePath { GPE_PATH_AUTO = 0, GPE_PATH_GEMV = 1, GPE_PATH_TILED = 2, GPE_PATH_MMA = 3 };

enum GpeStatus {
    GPE_OK = 0,
    GPE_ERR_BAD_DTYPE = -1,
    GPE_ERR_BAD_SHAPE = -2,
    GPE_ERR_NULL_POINTER = -3,
    GPE_ERR_WORKSPACE_TOO_SMALL = -4,
    GPE_ERR_UNSUPPORTED = -5,
    GPE_ERR_MISALIGNED = -6, // a pointer the kernels read with 16-byte vector loads is not 16-byte aligned
};

// Human-readable text for any launcher return code (GPE_* or cudaError_t).
GPE_API const char* gpe_status_string(int status);
