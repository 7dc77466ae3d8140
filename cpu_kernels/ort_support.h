// What the ONNX Runtime glue files share (ort_glue.cpp: registration and the GEMM / MoE ops,
// ort_attention.cpp: SinkAttention): the API table, tensor and attribute accessors, one-line
// errors, the intra-op pool as a gek::Pool.
#pragma once
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "compute.h"
#include "ort_api.h"

namespace gek_ort {

using namespace ortmini;

extern const Api* g_api;
constexpr int64_t kMaxK = 32768;   // kernels keep one row's block scales on the stack

struct Config {
  const gek::Isa* isa;
  gek::ActMode mode;
};

OrtStatus* error(const std::string& msg);

struct Tensor {
  const OrtValue* value = nullptr;
  int type = ELEM_UNDEFINED;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

OrtStatus* read_tensor(OrtKernelContext* ctx, size_t i, Tensor& t);
std::string shape_str(const std::vector<int64_t>& s);
// One line naming op, port, the shape given and the one expected, or null when they agree.
OrtStatus* expect(const char* op, const char* port, const Tensor& t, const std::vector<int64_t>& shape);
OrtStatus* output(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& shape, float** out);
OrtStatus* attr_int(const OrtKernelInfo* info, const char* name, int64_t* v);
float attr_float(const OrtKernelInfo* info, const char* name, float dflt);   // dflt when absent
OrtStatus* attr_string(const OrtKernelInfo* info, const char* name, std::string* v);

struct PoolCtx {   // the intra-op pool of the running kernel
  OrtKernelContext* ctx;
};
gek::Engine engine(const Config& cfg, PoolCtx* pc);

// No exception crosses into ONNX Runtime: it becomes an OrtStatus.
template <typename F>
OrtStatus* guarded(F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return error(std::string("gptoss_edge CPU kernel: ") + e.what());
  }
}

// SinkAttention (ort_attention.cpp): full-attention layers.
OrtStatus* create_attention(const Config& cfg, const OrtKernelInfo* info, void** kernel);
OrtStatus* compute_attention(void* kernel, OrtKernelContext* ctx);
void destroy_attention(void* kernel);

}  // namespace gek_ort
