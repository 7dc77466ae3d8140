// SinkAttention TensorRT glue. Port indices and attribute names: generated opset header.
#include "plugin.h"

#include "kernel.h"

namespace gpe
{
namespace op = opset::sink_attention;

namespace
{
struct Heads
{
    int H, KVH, D;
};
Heads heads(Attrs const& a)
{
    return {static_cast<int>(a.i(op::kNumHeadsAttr)), static_cast<int>(a.i(op::kNumKvHeadsAttr)),
        static_cast<int>(a.i(op::kHeadDimAttr))};
}

// The ports agree on batch (query, key, value, caches, past_len, new_len), sequence (query,
// key, value) and cache shape (past_value as past_key; a ring holds >= window slots).
// dims(port) -> that input's Dims; a dim still unknown (-1, build time) is not compared.
template <typename DimsOf>
void check_agreement(int64_t window, DimsOf const& dims)
{
    auto const same = [&](int port, int axis, int ref_port, int ref_axis) {
        int64_t const want = dims(ref_port).d[ref_axis];
        if (want >= 0)
            expect_dim(op::kOpType, op::kInputs[port].name, dims(port), axis, want);
    };
    for (int port : {op::kKeyIn, op::kValueIn, op::kPastKeyIn, op::kPastValueIn, op::kPastLenIn, op::kNewLenIn})
        same(port, 0, op::kQueryIn, 0);
    same(op::kKeyIn, 1, op::kQueryIn, 1);
    same(op::kValueIn, 1, op::kQueryIn, 1);
    same(op::kPastValueIn, 2, op::kPastKeyIn, 2);
    int64_t const capacity = dims(op::kPastKeyIn).d[2];
    if (window > 0 && capacity >= 0 && capacity < window)
        throw std::invalid_argument(std::string(op::kOpType) + ": ring cache capacity " + std::to_string(capacity)
            + " is smaller than window " + std::to_string(window));
}
} // namespace

std::string SinkAttentionPlugin::validate(Attrs const& a)
{
    Heads const h = heads(a);
    if (gpe_sink_attention_workspace_size(1, 1, h.H, h.KVH, h.D, 0) == 0)
        return "unsupported heads " + a.describe({op::kNumHeadsAttr, op::kNumKvHeadsAttr, op::kHeadDimAttr})
            + " (the kernels need head dim in {16,32,64,128}, kv heads dividing heads, at most 16 heads per kv head)";
    if (a.i(op::kWindowAttr) < 0)
        return "unsupported " + a.describe({op::kWindowAttr}) + " (must be >= 0)";
    return {};
}

int32_t SinkAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_in,
    nvinfer1::DimsExprs const*, int32_t, nvinfer1::DimsExprs* outputs, int32_t nb_out, nvinfer1::IExprBuilder&) noexcept
{
    if (nb_in != op::kNbInputs || nb_out != op::kNbOutputs)
        return -1;
    outputs[op::kOutputOut] = inputs[op::kQueryIn];
    outputs[op::kPresentKeyOut] = inputs[op::kPastKeyIn];
    outputs[op::kPresentValueOut] = inputs[op::kPastValueIn];
    return 0;
}

int32_t SinkAttentionPlugin::getAliasedInput(int32_t output_index) noexcept
{
    if (output_index == op::kPresentKeyOut)
        return op::kPastKeyIn;
    if (output_index == op::kPresentValueOut)
        return op::kPastValueIn;
    return -1;
}

int32_t SinkAttentionPlugin::configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
    nvinfer1::DynamicPluginTensorDesc const*, int32_t nb_out)
{
    if (nb_in != op::kNbInputs || nb_out != op::kNbOutputs)
        return -1;
    Heads const h = heads(attrs_);
    auto const check = [&](int port, int rank, std::initializer_list<std::pair<int, int64_t>> axes) {
        auto const& dims = in[port].desc.dims;
        expect_rank(op::kOpType, op::kInputs[port].name, dims, rank);
        for (auto const& [axis, value] : axes)
            expect_dim(op::kOpType, op::kInputs[port].name, dims, axis, value);
    };
    check(op::kQueryIn, 3, {{2, int64_t(h.H) * h.D}});
    check(op::kKeyIn, 3, {{2, int64_t(h.KVH) * h.D}});
    check(op::kValueIn, 3, {{2, int64_t(h.KVH) * h.D}});
    check(op::kSinksIn, 1, {{0, h.H}});
    check(op::kRopeCosIn, 2, {{1, h.D / 2}});
    check(op::kRopeSinIn, 2, {{1, h.D / 2}});
    check(op::kPastKeyIn, 4, {{1, h.KVH}, {3, h.D}});
    check(op::kPastValueIn, 4, {{1, h.KVH}, {3, h.D}});
    check(op::kPastLenIn, 1, {});
    check(op::kNewLenIn, 1, {});
    check_agreement(attrs_.i(op::kWindowAttr), [&](int port) -> nvinfer1::Dims const& { return in[port].desc.dims; });
    return 0;
}

int32_t SinkAttentionPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_in,
    nvinfer1::PluginTensorDesc const*, int32_t nb_out) noexcept
{
    return guarded<int32_t>(op::kOpType, -1, [&] {
        if (nb_in != op::kNbInputs || nb_out != op::kNbOutputs)
            return -1;
        check_agreement(attrs_.i(op::kWindowAttr), [&](int port) -> nvinfer1::Dims const& { return in[port].dims; });
        return 0;
    });
}

size_t SinkAttentionPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
    nvinfer1::DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    if (nb_in != op::kNbInputs)
        return 0;
    Heads const h = heads(attrs_);
    nvinfer1::Dims const& q = in[op::kQueryIn].max;
    return record_workspace(
        gpe_sink_attention_workspace_size(static_cast<int>(q.d[0]), static_cast<int>(q.d[1]), h.H, h.KVH, h.D, 0));
}

int32_t SinkAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded<int32_t>(op::kOpType, -1, [&] {
        Heads const h = heads(attrs_);
        int const B = static_cast<int>(in[op::kQueryIn].dims.d[0]), S = static_cast<int>(in[op::kQueryIn].dims.d[1]);
        int const status = gpe_sink_attention(to_gpe_dtype(in[op::kQueryIn].type), B, S, h.H, h.KVH, h.D,
            static_cast<int>(in[op::kPastKeyIn].dims.d[2]), static_cast<int>(attrs_.i(op::kWindowAttr)),
            attrs_.f(op::kScaleAttr), static_cast<int>(in[op::kRopeCosIn].dims.d[0]), 0, inputs[op::kQueryIn],
            inputs[op::kKeyIn], inputs[op::kValueIn], static_cast<float const*>(inputs[op::kSinksIn]),
            static_cast<float const*>(inputs[op::kRopeCosIn]), static_cast<float const*>(inputs[op::kRopeSinIn]),
            inputs[op::kPastKeyIn], inputs[op::kPastValueIn], static_cast<int32_t const*>(inputs[op::kPastLenIn]),
            static_cast<int32_t const*>(inputs[op::kNewLenIn]), outputs[op::kOutputOut], outputs[op::kPresentKeyOut],
            outputs[op::kPresentValueOut], workspace,
            workspace_available(gpe_sink_attention_workspace_size(B, S, h.H, h.KVH, h.D, 0)), stream);
        return report_status(op::kOpType, status);
    });
}

} // namespace gpe
