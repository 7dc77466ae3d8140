// gpe_status_string: the one place launcher return codes become text.
#include "gpe_api.h"

#include <cuda_runtime.h>

GPE_API const char* gpe_status_string(int status)
{
    switch (status)
    {
    case GPE_OK: return "ok";
    case GPE_ERR_BAD_DTYPE: return "unsupported activation dtype (expected float32, float16 or bfloat16)";
    case GPE_ERR_BAD_SHAPE: return "bad shape or attribute (see the launcher's documented constraints)";
    case GPE_ERR_NULL_POINTER: return "a required device pointer is null";
    case GPE_ERR_WORKSPACE_TOO_SMALL: return "workspace smaller than the launcher's *_workspace_size()";
    case GPE_ERR_UNSUPPORTED: return "configuration not supported by these kernels";
    case GPE_ERR_MISALIGNED:
        return "a device pointer read with 16-byte vector loads (activations, packed weights, caches, workspace) "
               "is not 16-byte aligned";
    default: break;
    }
    return status > 0 ? cudaGetErrorString(static_cast<cudaError_t>(status)) : "unknown gptoss_edge status";
}
