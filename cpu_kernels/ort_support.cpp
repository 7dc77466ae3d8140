// ort_support.h: accessors and errors shared by the glue files.
#include "ort_support.h"

namespace gek_ort {

const Api* g_api = nullptr;

OrtStatus* error(const std::string& msg) {
  return g_api->fn<FnCreateStatus>(CreateStatus)(ORT_INVALID_ARGUMENT, msg.c_str());
}

// ---- small accessors --------------------------------------------------------------------
OrtStatus* read_tensor(OrtKernelContext* ctx, size_t i, Tensor& t) {
  OrtStatus* st = g_api->fn<FnKernelContext_GetInput>(KernelContext_GetInput)(ctx, i, &t.value);
  if (st || !t.value) return st;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if ((st = g_api->fn<FnGetTensorTypeAndShape>(GetTensorTypeAndShape)(t.value, &info))) return st;
  size_t n = 0;
  if (!(st = g_api->fn<FnGetTensorElementType>(GetTensorElementType)(info, &t.type)) &&
      !(st = g_api->fn<FnGetDimensionsCount>(GetDimensionsCount)(info, &n))) {
    t.shape.resize(n);
    st = g_api->fn<FnGetDimensions>(GetDimensions)(info, t.shape.data(), n);
  }
  g_api->fn<FnReleaseTensorTypeAndShapeInfo>(ReleaseTensorTypeAndShapeInfo)(info);
  if (st) return st;
  void* p = nullptr;
  st = g_api->fn<FnGetTensorMutableData>(GetTensorMutableData)(const_cast<OrtValue*>(t.value), &p);
  t.data = p;
  return st;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

OrtStatus* expect(const char* op, const char* port, const Tensor& t, const std::vector<int64_t>& shape) {
  if (t.shape == shape) return nullptr;
  return error(std::string(op) + ": input '" + port + "' has shape " + shape_str(t.shape) + ", expected " +
               shape_str(shape));
}

OrtStatus* output(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& shape, float** out) {
  OrtValue* v = nullptr;
  OrtStatus* st = g_api->fn<FnKernelContext_GetOutput>(KernelContext_GetOutput)(ctx, i, shape.data(), shape.size(), &v);
  if (st) return st;
  void* p = nullptr;
  st = g_api->fn<FnGetTensorMutableData>(GetTensorMutableData)(v, &p);
  *out = static_cast<float*>(p);
  return st;
}

OrtStatus* attr_int(const OrtKernelInfo* info, const char* name, int64_t* v) {
  return g_api->fn<FnKernelInfoGetAttribute_int64>(KernelInfoGetAttribute_int64)(info, name, v);
}

// Optional float attribute: the op set's default when absent.
float attr_float(const OrtKernelInfo* info, const char* name, float dflt) {
  float v = dflt;
  if (OrtStatus* st = g_api->fn<FnKernelInfoGetAttribute_float>(KernelInfoGetAttribute_float)(info, name, &v)) {
    g_api->fn<FnReleaseStatus>(ReleaseStatus)(st);
    return dflt;
  }
  return v;
}

OrtStatus* attr_string(const OrtKernelInfo* info, const char* name, std::string* v) {
  size_t n = 0;
  auto get = g_api->fn<FnKernelInfoGetAttribute_string>(KernelInfoGetAttribute_string);
  if (OrtStatus* st = get(info, name, nullptr, &n)) return st;
  std::vector<char> buf(n + 1, 0);
  if (OrtStatus* st = get(info, name, buf.data(), &n)) return st;
  *v = buf.data();
  return nullptr;
}

namespace {
void parallel_for(void* c, void (*fn)(void*, size_t), size_t n, void* user) {
  auto* pc = static_cast<PoolCtx*>(c);
  OrtStatus* st = g_api->fn<FnKernelContext_ParallelFor>(KernelContext_ParallelFor)(pc->ctx, fn, n, 0, user);
  if (st) {   // no pool available: run inline
    g_api->fn<FnReleaseStatus>(ReleaseStatus)(st);
    for (size_t i = 0; i < n; ++i) fn(user, i);
  }
}

}  // namespace

gek::Engine engine(const Config& cfg, PoolCtx* pc) { return gek::Engine{cfg.isa, cfg.mode, {parallel_for, pc}}; }

}  // namespace gek_ort
