// ONNX Runtime glue: the custom-op domain "gptoss_edge" with MoeMxfp4, Gemm4bit, Gemm8bit and
// SinkAttention (full-attention layers; ort_attention.cpp) (CPU, float32 activations), registered by RegisterCustomOps (SessionOptions.register_custom_ops_library).
// Op names, port order/optionality/dtypes and attribute names/defaults come from
// plugins/common/opset_generated.h (generated from compiler/opset.py): nothing typed twice.
// Session config entries, read at registration (set them before registering the library):
//   gptoss_edge.cpu_activations  "fp32" (exact products, default) | "int8" (per-32-block int8)
//   gptoss_edge.cpu_isa          "auto" (default) | "avx512" | "avx2" | "neon" | "portable"
// No exception crosses into ONNX Runtime: errors become an OrtStatus with a one-line message.
#include <cstring>
#include <string>
#include <vector>

#include "compute.h"
#include "opset_generated.h"
#include "ort_support.h"

using namespace gek_ort;
namespace ops = gptoss_edge::opset;

namespace {

// ---- kernels ------------------------------------------------------------------------------
// MoeMxfp4's optional new_len [batch]: token t = b*S + s (S = T / batch) is real when
// s < new_len[b]. `padded` says whether any token is not; only then does `real` get the real
// tokens' indices, ascending (a full step, the common case, builds no list).
OrtStatus* real_tokens(const Tensor& new_len, int64_t T, bool& padded, std::vector<int64_t>& real) {
  padded = false;
  real.clear();
  if (!new_len.value) return nullptr;
  const int64_t B = new_len.shape.size() == 1 ? new_len.shape[0] : 0;
  if (new_len.type != ELEM_INT32 || B <= 0 || T % B)
    return error("MoeMxfp4: input 'new_len' must be int32 [batch] with the " + std::to_string(T) +
                 " tokens a whole number of batch rows; got shape " + shape_str(new_len.shape));
  const int64_t S = T / B;
  const auto* len = static_cast<const int32_t*>(new_len.data);
  for (int64_t b = 0; b < B; ++b) padded = padded || len[b] < S;
  for (int64_t b = 0; padded && b < B; ++b)
    for (int64_t s = 0; s < S && s < len[b]; ++s) real.push_back(b * S + s);
  return nullptr;
}

struct MoeKernel {
  Config cfg;
  gek::MoeShape s;
};

OrtStatus* moe_compute(MoeKernel* k, OrtKernelContext* ctx) {
  namespace m = ops::moe_mxfp4;
  Tensor in[m::kNbInputs];
  size_t n_in = 0;
  if (OrtStatus* st = g_api->fn<FnKernelContext_GetInputCount>(KernelContext_GetInputCount)(ctx, &n_in)) return st;
  for (size_t i = 0; i < m::kNbInputs && i < n_in; ++i)
    if (OrtStatus* st = read_tensor(ctx, i, in[i])) return st;
  const int64_t E = k->s.experts, H = k->s.hidden, I = k->s.inter;
  const Tensor& x = in[m::kHiddenIn];
  if (x.shape.size() != 2 || x.shape[1] != H)
    return error(std::string(m::kOpType) + ": input 'hidden' has shape " + shape_str(x.shape) +
                 ", expected (tokens, " + std::to_string(H) + ")");
  const int64_t T = x.shape[0];
  const std::pair<int, std::vector<int64_t>> shapes[] = {
      {m::kRouterWeightIn, {E, H}}, {m::kRouterBiasIn, {E}},
      {m::kGateUpBlocksIn, {E, 2 * I, H / 32, 16}}, {m::kGateUpScalesIn, {E, 2 * I, H / 32}},
      {m::kGateUpBiasIn, {E, 2 * I}}, {m::kDownBlocksIn, {E, H, I / 32, 16}},
      {m::kDownScalesIn, {E, H, I / 32}}, {m::kDownBiasIn, {E, H}}};
  for (const auto& [port, shape] : shapes)
    if (OrtStatus* st = expect(m::kOpType, m::kInputs[port].name, in[port], shape)) return st;
  for (int port : {int(m::kGateUpBlocksIn), int(m::kGateUpScalesIn), int(m::kDownBlocksIn), int(m::kDownScalesIn)})
    if (in[port].type != ELEM_UINT8 && in[port].type != ELEM_INT8)
      return error(std::string(m::kOpType) + ": input '" + m::kInputs[port].name + "' must be uint8 or int8 bytes");
  float* out = nullptr;
  if (OrtStatus* st = output(ctx, m::kOutputOut, {T, H}, &out)) return st;
  if (T == 0) return nullptr;
  auto rows = [&](int blocks, int scales, int64_t nb) {
    return gek::Rows{static_cast<const uint8_t*>(in[blocks].data), in[scales].data, gek::ScaleKind::E8M0,
                     &gek::mxfp4_lut(), nb};
  };
  auto f32 = [&](int port) { return static_cast<const float*>(in[port].data); };
  const gek::MoeWeights w{f32(m::kRouterWeightIn), f32(m::kRouterBiasIn),
                          rows(m::kGateUpBlocksIn, m::kGateUpScalesIn, H / 32), f32(m::kGateUpBiasIn),
                          rows(m::kDownBlocksIn, m::kDownScalesIn, I / 32), f32(m::kDownBiasIn)};
  bool padded = false;
  std::vector<int64_t> real;
  if (OrtStatus* st = real_tokens(in[m::kNewLenIn], T, padded, real)) return st;
  PoolCtx pc{ctx};
  const float* hid = f32(m::kHiddenIn);
  if (!padded) {
    gek::moe_mxfp4(engine(k->cfg, &pc), k->s, w, hid, T, out);
    return nullptr;
  }
  // Padded rows: route only the real tokens (gathered), zeros elsewhere.
  const int64_t R = int64_t(real.size());
  std::vector<float> xs(size_t(R * H)), ys(size_t(R * H));
  for (int64_t r = 0; r < R; ++r) std::memcpy(&xs[size_t(r * H)], hid + real[r] * H, size_t(H) * sizeof(float));
  if (R) gek::moe_mxfp4(engine(k->cfg, &pc), k->s, w, xs.data(), R, ys.data());
  std::memset(out, 0, size_t(T * H) * sizeof(float));
  for (int64_t r = 0; r < R; ++r) std::memcpy(out + real[r] * H, &ys[size_t(r * H)], size_t(H) * sizeof(float));
  return nullptr;
}

// What Gemm4bit and Gemm8bit share (same port order: input, weight, weight_scales, bias):
// the inputs read, x's last dim and the optional bias checked, the output [..., N] allocated.
static_assert(ops::gemm4bit::kInputIn == 0 && ops::gemm8bit::kInputIn == 0 && ops::gemm4bit::kBiasIn == 3 &&
              ops::gemm8bit::kBiasIn == 3 && ops::gemm4bit::kNbInputs == 4 && ops::gemm8bit::kNbInputs == 4,
              "Gemm4bit and Gemm8bit ports: input, weight, weight_scales, bias");
struct GemmIO {
  Tensor in[4];
  const float* bias = nullptr;
  float* out = nullptr;
  int64_t T = 0;                                      // rows of x (all dims but the last)
};

OrtStatus* gemm_io(OrtKernelContext* ctx, const char* op, const ops::PortDesc* ports, int64_t K, int64_t N,
                   GemmIO& io) {
  size_t n_in = 0;
  if (OrtStatus* st = g_api->fn<FnKernelContext_GetInputCount>(KernelContext_GetInputCount)(ctx, &n_in)) return st;
  for (size_t i = 0; i < n_in && i < 4; ++i)
    if (OrtStatus* st = read_tensor(ctx, i, io.in[i])) return st;
  const Tensor& x = io.in[0];
  if (x.shape.empty() || x.shape.back() != K)
    return error(std::string(op) + ": input 'input' has shape " + shape_str(x.shape) + ", last dim expected " +
                 std::to_string(K));
  if (io.in[3].value) {
    if (OrtStatus* st = expect(op, ports[3].name, io.in[3], {N})) return st;
    io.bias = static_cast<const float*>(io.in[3].data);
  }
  std::vector<int64_t> oshape = x.shape;
  oshape.back() = N;
  io.T = 1;
  for (size_t i = 0; i + 1 < x.shape.size(); ++i) io.T *= x.shape[i];
  return output(ctx, 0, oshape, &io.out);
}

struct GemmKernel {
  Config cfg;
  bool mxfp4;
  int64_t K, N;
};

OrtStatus* gemm_compute(GemmKernel* k, OrtKernelContext* ctx) {
  namespace g = ops::gemm4bit;
  const int64_t K = k->K, N = k->N;
  GemmIO io;
  if (OrtStatus* st = gemm_io(ctx, g::kOpType, g::kInputs, K, N, io)) return st;
  const Tensor* in = io.in;
  if (OrtStatus* st = expect(g::kOpType, g::kInputs[g::kWeightBlocksIn].name, in[g::kWeightBlocksIn], {N, K / 32, 16}))
    return st;
  if (in[g::kWeightBlocksIn].type != ELEM_UINT8 && in[g::kWeightBlocksIn].type != ELEM_INT8)
    return error(std::string(g::kOpType) + ": input 'weight_blocks' must be uint8 or int8 bytes");
  const Tensor& sc = in[g::kWeightScalesIn];
  if (OrtStatus* st = expect(g::kOpType, g::kInputs[g::kWeightScalesIn].name, sc, {N, K / 32})) return st;
  if (k->mxfp4 ? (sc.type != ELEM_UINT8 && sc.type != ELEM_INT8) : sc.type != ELEM_FLOAT16)
    return error(std::string(g::kOpType) + ": 'weight_scales' must be " + (k->mxfp4 ? "uint8/int8 (E8M0)" : "float16") +
                 " for format " + (k->mxfp4 ? g::kFormatMxfp4 : g::kFormatInt4));
  if (io.T == 0) return nullptr;
  const gek::Rows w{static_cast<const uint8_t*>(in[g::kWeightBlocksIn].data), sc.data,
                    k->mxfp4 ? gek::ScaleKind::E8M0 : gek::ScaleKind::F16,
                    k->mxfp4 ? &gek::mxfp4_lut() : &gek::int4_lut(), K / 32};
  PoolCtx pc{ctx};
  gek::gemm_4bit(engine(k->cfg, &pc), w, N, static_cast<const float*>(in[g::kInputIn].data), io.T, io.bias, io.out);
  return nullptr;
}

struct Gemm8Kernel {
  Config cfg;
  int64_t K, N;
};

OrtStatus* gemm8_compute(Gemm8Kernel* k, OrtKernelContext* ctx) {
  namespace g = ops::gemm8bit;
  const int64_t K = k->K, N = k->N;
  GemmIO io;
  if (OrtStatus* st = gemm_io(ctx, g::kOpType, g::kInputs, K, N, io)) return st;
  const Tensor* in = io.in;
  if (OrtStatus* st = expect(g::kOpType, g::kInputs[g::kWeightIn].name, in[g::kWeightIn], {N, K / 32, 32})) return st;
  if (OrtStatus* st = expect(g::kOpType, g::kInputs[g::kWeightScalesIn].name, in[g::kWeightScalesIn], {N, K / 32}))
    return st;
  if (in[g::kWeightIn].type != ELEM_INT8 || in[g::kWeightScalesIn].type != ELEM_FLOAT16)
    return error(std::string(g::kOpType) + ": 'weight' must be int8 and 'weight_scales' float16");
  if (io.T == 0) return nullptr;
  const gek::Rows8 w{static_cast<const int8_t*>(in[g::kWeightIn].data),
                     static_cast<const uint16_t*>(in[g::kWeightScalesIn].data), K / 32};
  PoolCtx pc{ctx};
  gek::gemm_8bit(engine(k->cfg, &pc), w, N, static_cast<const float*>(in[g::kInputIn].data), io.T, io.bias, io.out);
  return nullptr;
}

// ---- op definitions -----------------------------------------------------------------------
struct Op {
  CustomOp base;     // first member: ONNX Runtime hands back &base
  const char* name;
  std::vector<int> in_types;
  std::vector<int> in_optional;
  Config cfg;
  size_t n_out = 1;  // float32 outputs, all required
};

// ORT element type of a port: activations ("T") run in float32 here; a port that may carry
// several types (packed bytes uint8|int8, int4 scales float16) is left open and checked at run.
int port_type(const ops::PortDesc& p) {
  if (p.dtypes == ops::kDtypeT || p.dtypes == ops::kDtypeFloat32) return ELEM_FLOAT;
  if (p.dtypes == ops::kDtypeUint8) return ELEM_UINT8;
  if (p.dtypes == ops::kDtypeInt8) return ELEM_INT8;
  if (p.dtypes == ops::kDtypeFloat16) return ELEM_FLOAT16;
  if (p.dtypes == ops::kDtypeInt32) return ELEM_INT32;
  return ELEM_UNDEFINED;
}

template <size_t N>
void ports(const ops::PortDesc (&desc)[N], std::vector<int>& types, std::vector<int>& optional) {
  for (const ops::PortDesc& p : desc) {
    types.push_back(port_type(p));
    optional.push_back(p.optional ? 1 : 0);
  }
}

const Op* self(const CustomOp* c) { return reinterpret_cast<const Op*>(c); }

OrtStatus* create_moe(const CustomOp* c, const Api*, const OrtKernelInfo* info, void** kernel) {
  return guarded([&]() -> OrtStatus* {
    namespace m = ops::moe_mxfp4;
    auto* k = new MoeKernel{self(c)->cfg, {}};
    const int req[] = {m::kNumExpertsAttr, m::kTopKAttr, m::kHiddenSizeAttr, m::kIntermediateSizeAttr};
    int64_t v[4];
    for (int i = 0; i < 4; ++i)
      if (OrtStatus* st = attr_int(info, m::kAttrs[req[i]].name, &v[i])) {
        delete k;
        return st;
      }
    auto opt = [&](int a) { return attr_float(info, m::kAttrs[a].name, float(m::kAttrs[a].defaultNumber)); };
    k->s = gek::MoeShape{v[0], v[1], v[2], v[3], opt(m::kSwigluLimitAttr), opt(m::kSwigluAlphaAttr),
                         opt(m::kSwigluLinearOffsetAttr)};
    if (v[1] < 1 || v[1] > v[0] || v[2] % 32 || v[3] % 32 || v[2] > kMaxK || v[3] > kMaxK) {
      delete k;
      return error("MoeMxfp4: needs 0 < top_k <= num_experts and hidden/intermediate sizes that are multiples "
                   "of 32 up to 32768");
    }
    *kernel = k;
    return nullptr;
  });
}

OrtStatus* create_gemm(const CustomOp* c, const Api*, const OrtKernelInfo* info, void** kernel) {
  return guarded([&]() -> OrtStatus* {
    namespace g = ops::gemm4bit;
    std::string format;
    int64_t K = 0, N = 0;
    if (OrtStatus* st = attr_string(info, g::kAttrs[g::kFormatAttr].name, &format)) return st;
    if (OrtStatus* st = attr_int(info, g::kAttrs[g::kInFeaturesAttr].name, &K)) return st;
    if (OrtStatus* st = attr_int(info, g::kAttrs[g::kOutFeaturesAttr].name, &N)) return st;
    if (format != g::kFormatMxfp4 && format != g::kFormatInt4)
      return error("Gemm4bit: attribute 'format' must be 'mxfp4' or 'int4', got '" + format + "'");
    if (K % 32 || K > kMaxK || K <= 0 || N <= 0)
      return error("Gemm4bit: in_features must be a positive multiple of 32 up to 32768");
    *kernel = new GemmKernel{self(c)->cfg, format == g::kFormatMxfp4, K, N};
    return nullptr;
  });
}

OrtStatus* create_gemm8(const CustomOp* c, const Api*, const OrtKernelInfo* info, void** kernel) {
  return guarded([&]() -> OrtStatus* {
    namespace g = ops::gemm8bit;
    int64_t K = 0, N = 0;
    if (OrtStatus* st = attr_int(info, g::kAttrs[g::kInFeaturesAttr].name, &K)) return st;
    if (OrtStatus* st = attr_int(info, g::kAttrs[g::kOutFeaturesAttr].name, &N)) return st;
    if (K % 32 || K > kMaxK || K <= 0 || N <= 0)
      return error("Gemm8bit: in_features must be a positive multiple of 32 up to 32768 and out_features positive");
    *kernel = new Gemm8Kernel{self(c)->cfg, K, N};
    return nullptr;
  });
}

OrtStatus* create_attn(const CustomOp* c, const Api*, const OrtKernelInfo* info, void** kernel) {
  return guarded([&] { return create_attention(self(c)->cfg, info, kernel); });
}

OrtStatus* compute_moe(void* k, OrtKernelContext* ctx) {
  return guarded([&] { return moe_compute(static_cast<MoeKernel*>(k), ctx); });
}
OrtStatus* compute_gemm(void* k, OrtKernelContext* ctx) {
  return guarded([&] { return gemm_compute(static_cast<GemmKernel*>(k), ctx); });
}
OrtStatus* compute_gemm8(void* k, OrtKernelContext* ctx) {
  return guarded([&] { return gemm8_compute(static_cast<Gemm8Kernel*>(k), ctx); });
}
void destroy_moe(void* k) { delete static_cast<MoeKernel*>(k); }
void destroy_gemm8(void* k) { delete static_cast<Gemm8Kernel*>(k); }
void destroy_gemm(void* k) { delete static_cast<GemmKernel*>(k); }

const char* op_name(const CustomOp* c) { return self(c)->name; }
const char* op_ep(const CustomOp*) { return "CPUExecutionProvider"; }
int op_in_type(const CustomOp* c, size_t i) { return self(c)->in_types[i]; }
size_t op_in_count(const CustomOp* c) { return self(c)->in_types.size(); }
int op_out_type(const CustomOp*, size_t) { return ELEM_FLOAT; }
size_t op_out_count(const CustomOp* c) { return self(c)->n_out; }
int op_in_char(const CustomOp* c, size_t i) { return self(c)->in_optional[i] ? IO_OPTIONAL : IO_REQUIRED; }
int op_out_char(const CustomOp*, size_t) { return IO_REQUIRED; }
int op_mem_type(const CustomOp*, size_t) { return 0; }   // OrtMemTypeDefault
int op_zero(const CustomOp*) { return 0; }
int op_start_version(const CustomOp*) { return 1; }
int op_end_version(const CustomOp*) { return 1 << 30; }

template <size_t N>
Op* make_op(const char* name, const ops::PortDesc (&inputs)[N], Config cfg,
            OrtStatus* (*create)(const CustomOp*, const Api*, const OrtKernelInfo*, void**),
            OrtStatus* (*compute)(void*, OrtKernelContext*), void (*destroy)(void*)) {
  auto* op = new Op{};
  CustomOp& b = op->base;
  b.version = kApiVersion;
  b.GetName = op_name;
  b.GetExecutionProviderType = op_ep;
  b.GetInputType = op_in_type;
  b.GetInputTypeCount = op_in_count;
  b.GetOutputType = op_out_type;
  b.GetOutputTypeCount = op_out_count;
  b.KernelDestroy = destroy;
  b.GetInputCharacteristic = op_in_char;
  b.GetOutputCharacteristic = op_out_char;
  b.GetInputMemoryType = op_mem_type;
  b.GetVariadicInputMinArity = op_zero;
  b.GetVariadicInputHomogeneity = op_zero;
  b.GetVariadicOutputMinArity = op_zero;
  b.GetVariadicOutputHomogeneity = op_zero;
  b.CreateKernelV2 = create;
  b.KernelComputeV2 = compute;
  b.GetStartVersion = op_start_version;
  b.GetEndVersion = op_end_version;
  op->name = name;
  ports(inputs, op->in_types, op->in_optional);
  op->cfg = cfg;
  return op;
}

// A session config entry, or `dflt` when unset.
std::string config_entry(const OrtSessionOptions* so, const char* key, const char* dflt) {
  int has = 0;
  if (OrtStatus* st = g_api->fn<FnHasSessionConfigEntry>(HasSessionConfigEntry)(so, key, &has)) {
    g_api->fn<FnReleaseStatus>(ReleaseStatus)(st);
    return dflt;
  }
  if (!has) return dflt;
  size_t n = 0;
  auto get = g_api->fn<FnGetSessionConfigEntry>(GetSessionConfigEntry);
  if (OrtStatus* st = get(so, key, nullptr, &n)) g_api->fn<FnReleaseStatus>(ReleaseStatus)(st);
  std::vector<char> buf(n + 1, 0);
  if (OrtStatus* st = get(so, key, buf.data(), &n)) {
    g_api->fn<FnReleaseStatus>(ReleaseStatus)(st);
    return dflt;
  }
  return buf.data();
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* so,
                                                                              const OrtApiBase* base) {
  g_api = static_cast<const Api*>(base->GetApi(kApiVersion));
  if (!g_api) {   // an older runtime: report through its version-1 table (CreateStatus is slot 0)
    const Api* v1 = static_cast<const Api*>(base->GetApi(1));
    const std::string msg = std::string("gptoss_edge CPU kernels need ONNX Runtime API ") +
                            std::to_string(kApiVersion) + " (onnxruntime >= 1.17); this is " +
                            base->GetVersionString();
    return v1 ? v1->fn<FnCreateStatus>(CreateStatus)(ORT_FAIL, msg.c_str()) : nullptr;
  }
  return guarded([&]() -> OrtStatus* {
    const std::string acts = config_entry(so, "gptoss_edge.cpu_activations", "fp32");
    const std::string isa_name = config_entry(so, "gptoss_edge.cpu_isa", "auto");
    if (acts != "fp32" && acts != "int8")
      return error("gptoss_edge.cpu_activations must be 'fp32' or 'int8', got '" + acts + "'");
    const gek::Isa* isa = gek::select_isa(isa_name.c_str());
    if (!isa) return error("gptoss_edge.cpu_isa '" + isa_name + "' is not available on this CPU/build");
    const Config cfg{isa, acts == "int8" ? gek::ActMode::I8 : gek::ActMode::F32};
    // Ops and domain live as long as the process (ONNX Runtime needs them past the session).
    Op* moe = make_op(ops::moe_mxfp4::kOpType, ops::moe_mxfp4::kInputs, cfg, create_moe, compute_moe, destroy_moe);
    Op* gemm = make_op(ops::gemm4bit::kOpType, ops::gemm4bit::kInputs, cfg, create_gemm, compute_gemm, destroy_gemm);
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* st = g_api->fn<FnCreateCustomOpDomain>(CreateCustomOpDomain)(ops::kDomain, &domain)) return st;
    Op* gemm8 = make_op(ops::gemm8bit::kOpType, ops::gemm8bit::kInputs, cfg, create_gemm8, compute_gemm8,
                        destroy_gemm8);
    Op* attn = make_op(ops::sink_attention::kOpType, ops::sink_attention::kInputs, cfg, create_attn,
                       compute_attention, destroy_attention);
    attn->n_out = ops::sink_attention::kNbOutputs;
    for (Op* op : {moe, gemm, gemm8, attn})
      if (OrtStatus* st = g_api->fn<FnCustomOpDomain_Add>(CustomOpDomain_Add)(domain, &op->base)) return st;
    return g_api->fn<FnAddCustomOpDomain>(AddCustomOpDomain)(so, domain);
  });
}

// For tools and tests: the ISA "auto" picks here, or whether a named one is usable (null if not).
extern "C" __attribute__((visibility("default"))) const char* gptoss_edge_cpu_isa(const char* name) {
  const gek::Isa* isa = gek::select_isa(name);
  return isa ? isa->name : nullptr;
}
