// Host helpers shared by the launchers: dtype dispatch and workspace carving.
#pragma once
#include "gpe_api.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stddef.h>
#include <stdint.h>

namespace gpe
{

// Call fn(T{}) with T = float / __half / __nv_bfloat16 for a GpeDtype; bad codes -> error.
template <typename Fn>
int dispatch_dtype(int dtype, Fn&& fn)
{
    switch (dtype)
    {
    case GPE_DTYPE_FLOAT32: return fn(float{});
    case GPE_DTYPE_FLOAT16: return fn(__half{});
    case GPE_DTYPE_BFLOAT16: return fn(__nv_bfloat16{});
    default: return GPE_ERR_BAD_DTYPE;
    }
}

constexpr size_t kWorkspaceAlign = 256;

// Is p a multiple of `bytes` (16: the 128-bit vector loads of activations, packed weights and caches)?
inline bool aligned(void const* p, size_t bytes = 16) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

inline size_t align_up(size_t n, size_t a = kWorkspaceAlign) { return (n + a - 1) / a * a; }

// Hands out aligned sub-buffers of one workspace; with base == nullptr it only measures.
class WorkspaceCarver
{
public:
    explicit WorkspaceCarver(void* base) : base_(static_cast<char*>(base)) {}

    template <typename U>
    U* take(size_t count)
    {
        U* p = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
        used_ += align_up(count * sizeof(U));
        return p;
    }
    size_t used() const { return used_; }

private:
    char* base_;
    size_t used_ = 0;
};

} // namespace gpe
