// ONNX Runtime glue for SinkAttention (attention.h): full-attention layers only (window 0).
// Outputs: out, present_key, present_value; the runtime binds present to past's buffer (in
// place), a plain run gets fresh outputs and the kernel copies past into them first.
#include <cmath>

#include "attention.h"
#include "opset_generated.h"
#include "ort_support.h"

namespace gek_ort {

namespace ops = gptoss_edge::opset;
namespace sa = ops::sink_attention;

namespace {

struct AttentionKernel {
  Config cfg;
  gek::AttnShape s;
};

OrtStatus* attention(AttentionKernel* k, OrtKernelContext* ctx) {
  const int64_t H = k->s.heads, Hkv = k->s.kv_heads, D = k->s.head_dim;
  Tensor in[sa::kNbInputs];
  for (size_t i = 0; i < sa::kNbInputs; ++i)
    if (OrtStatus* st = read_tensor(ctx, i, in[i])) return st;
  const Tensor& q = in[sa::kQueryIn];
  const Tensor& pk = in[sa::kPastKeyIn];
  if (q.shape.size() != 3 || q.shape[2] != H * D)
    return error(std::string(sa::kOpType) + ": input 'query' has shape " + shape_str(q.shape) +
                 ", expected (batch, seq, " + std::to_string(H * D) + ")");
  if (pk.shape.size() != 4)
    return error(std::string(sa::kOpType) + ": input 'past_key' has shape " + shape_str(pk.shape) +
                 ", expected (batch, " + std::to_string(Hkv) + ", capacity, " + std::to_string(D) + ")");
  const int64_t B = q.shape[0], S = q.shape[1], C = pk.shape[2];
  const Tensor& cos = in[sa::kRopeCosIn];
  const int64_t P = cos.shape.empty() ? 0 : cos.shape[0];
  const std::pair<int, std::vector<int64_t>> shapes[] = {
      {sa::kKeyIn, {B, S, Hkv * D}}, {sa::kValueIn, {B, S, Hkv * D}}, {sa::kSinksIn, {H}},
      {sa::kRopeCosIn, {P, D / 2}}, {sa::kRopeSinIn, {P, D / 2}}, {sa::kPastKeyIn, {B, Hkv, C, D}},
      {sa::kPastValueIn, {B, Hkv, C, D}}, {sa::kPastLenIn, {B}}, {sa::kNewLenIn, {B}}};
  for (const auto& [port, shape] : shapes)
    if (OrtStatus* st = expect(sa::kOpType, sa::kInputs[port].name, in[port], shape)) return st;
  float *out = nullptr, *present_key = nullptr, *present_value = nullptr;
  if (OrtStatus* st = output(ctx, sa::kOutputOut, {B, S, H * D}, &out)) return st;
  if (OrtStatus* st = output(ctx, sa::kPresentKeyOut, {B, Hkv, C, D}, &present_key)) return st;
  if (OrtStatus* st = output(ctx, sa::kPresentValueOut, {B, Hkv, C, D}, &present_value)) return st;
  auto f32 = [&](int port) { return static_cast<const float*>(in[port].data); };
  auto i32 = [&](int port) { return static_cast<const int32_t*>(in[port].data); };
  const gek::AttnArgs a{B, S, C, P, f32(sa::kQueryIn), f32(sa::kKeyIn), f32(sa::kValueIn), f32(sa::kSinksIn),
                        f32(sa::kRopeCosIn), f32(sa::kRopeSinIn), f32(sa::kPastKeyIn), f32(sa::kPastValueIn),
                        i32(sa::kPastLenIn), i32(sa::kNewLenIn), out, present_key, present_value};
  const std::string bad = gek::check_attention_lengths(a);
  if (!bad.empty()) return error(bad);
  PoolCtx pc{ctx};
  gek::sink_attention(engine(k->cfg, &pc), k->s, a);
  return nullptr;
}

}  // namespace

OrtStatus* create_attention(const Config& cfg, const OrtKernelInfo* info, void** kernel) {
  int64_t v[4];
  const int req[] = {sa::kNumHeadsAttr, sa::kNumKvHeadsAttr, sa::kHeadDimAttr, sa::kWindowAttr};
  for (int i = 0; i < 4; ++i)
    if (OrtStatus* st = attr_int(info, sa::kAttrs[req[i]].name, &v[i])) {
      if (req[i] != sa::kWindowAttr) return st;
      g_api->fn<FnReleaseStatus>(ReleaseStatus)(st);
      v[i] = 0;
    }
  const int64_t H = v[0], Hkv = v[1], D = v[2], window = v[3];
  if (window != 0)
    return error("SinkAttention: the CPU kernel runs full-attention layers (window 0), got window " +
                 std::to_string(window) + " (sliding layers lower to GroupQueryAttention)");
  if (H <= 0 || Hkv <= 0 || H % Hkv || H / Hkv > 64 || D <= 0 || D % 4 || D > gek::kMaxHeadDim)
    return error("SinkAttention: needs num_heads a multiple of num_kv_heads (at most 64 per kv head) and a "
                 "head_dim that is a multiple of 4 up to 1024, got " + std::to_string(H) + ", " + std::to_string(Hkv) + ", " + std::to_string(D));
  const float scale = attr_float(info, sa::kAttrs[sa::kScaleAttr].name, 1.f / std::sqrt(float(D)));
  *kernel = new AttentionKernel{cfg, gek::AttnShape{H, Hkv, D, scale}};
  return nullptr;
}

OrtStatus* compute_attention(void* k, OrtKernelContext* ctx) {
  return guarded([&] { return attention(static_cast<AttentionKernel*>(k), ctx); });
}

void destroy_attention(void* k) { delete static_cast<AttentionKernel*>(k); }

}  // namespace gek_ort
