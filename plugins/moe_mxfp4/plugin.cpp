// MoeMxfp4 TensorRT glue. Port indices and attribute names: generated opset header.
#include "plugin.h"

#include "kernel.h"

namespace gpe
{
namespace op = opset::moe_mxfp4;

std::string MoePlugin::validate(Attrs const& a)
{
    int64_t const E = a.i(op::kNumExpertsAttr), k = a.i(op::kTopKAttr);
    int64_t const H = a.i(op::kHiddenSizeAttr), I = a.i(op::kIntermediateSizeAttr);
    if (gpe_moe_mxfp4_workspace_size(1, static_cast<int>(E), static_cast<int>(k), static_cast<int>(H),
            static_cast<int>(I))
        == 0)
        return "unsupported attributes "
            + a.describe({op::kNumExpertsAttr, op::kTopKAttr, op::kHiddenSizeAttr, op::kIntermediateSizeAttr})
            + " (the kernels need 1 <= top-k <= min(experts, 32), experts <= 1024, sizes multiples of 32)";
    return {};
}

int32_t MoePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_in, nvinfer1::DimsExprs const*,
    int32_t, nvinfer1::DimsExprs* outputs, int32_t nb_out, nvinfer1::IExprBuilder&) noexcept
{
    if (nb_in < op::kNewLenIn || nb_in > op::kNbInputs || nb_out != op::kNbOutputs)
        return -1;
    outputs[op::kOutputOut] = inputs[op::kHiddenIn]; // [tokens..., hidden_size]
    return 0;
}

int32_t MoePlugin::configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
    nvinfer1::DynamicPluginTensorDesc const*, int32_t nb_out)
{
    if (nb_in < op::kNewLenIn || nb_in > op::kNbInputs || nb_out != op::kNbOutputs)
        return -1;
    int64_t const E = attrs_.i(op::kNumExpertsAttr), H = attrs_.i(op::kHiddenSizeAttr);
    int64_t const I = attrs_.i(op::kIntermediateSizeAttr);
    auto const dims = [&](int port) -> nvinfer1::Dims const& { return in[port].desc.dims; };
    auto const name = [&](int port) { return op::kInputs[port].name; };
    expect_rank(op::kOpType, name(op::kHiddenIn), dims(op::kHiddenIn), -2);
    expect_dim(op::kOpType, name(op::kHiddenIn), dims(op::kHiddenIn), dims(op::kHiddenIn).nbDims - 1, H);
    int64_t const expected[][5] = {
        {op::kRouterWeightIn, 2, E, H, 0},
        {op::kRouterBiasIn, 1, E, 0, 0},
        {op::kGateUpBlocksIn, 4, E, 2 * I, H / 32},
        {op::kGateUpScalesIn, 3, E, 2 * I, H / 32},
        {op::kGateUpBiasIn, 2, E, 2 * I, 0},
        {op::kDownBlocksIn, 4, E, H, I / 32},
        {op::kDownScalesIn, 3, E, H, I / 32},
        {op::kDownBiasIn, 2, E, H, 0},
    };
    for (auto const& e : expected)
    {
        int const port = static_cast<int>(e[0]), rank = static_cast<int>(e[1]);
        expect_rank(op::kOpType, name(port), dims(port), rank);
        for (int axis = 0; axis < rank && axis < 3; ++axis)
            expect_dim(op::kOpType, name(port), dims(port), axis, e[2 + axis]);
        if (rank == 4)
            expect_dim(op::kOpType, name(port), dims(port), 3, 16);
    }
    has_new_len_ = nb_in == op::kNbInputs;
    if (has_new_len_)
        expect_rank(op::kOpType, name(op::kNewLenIn), dims(op::kNewLenIn), 1);
    return 0;
}

int32_t MoePlugin::onShapeChange(
    nvinfer1::PluginTensorDesc const*, int32_t nb_in, nvinfer1::PluginTensorDesc const*, int32_t) noexcept
{
    has_new_len_ = nb_in == op::kNbInputs; // TensorRT calls this before the first enqueue of a context
    return 0;
}

size_t MoePlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
    nvinfer1::DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    if (nb_in < op::kNewLenIn)
        return 0;
    nvinfer1::Dims const& max = in[op::kHiddenIn].max;
    int64_t const tokens = volume(max, 0, max.nbDims - 1);
    return record_workspace(gpe_moe_mxfp4_workspace_size(static_cast<int>(tokens),
        static_cast<int>(attrs_.i(op::kNumExpertsAttr)), static_cast<int>(attrs_.i(op::kTopKAttr)),
        static_cast<int>(attrs_.i(op::kHiddenSizeAttr)), static_cast<int>(attrs_.i(op::kIntermediateSizeAttr))));
}

int32_t MoePlugin::enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded<int32_t>(op::kOpType, -1, [&] {
        nvinfer1::Dims const& hd = in[op::kHiddenIn].dims;
        int const tokens = static_cast<int>(volume(hd, 0, hd.nbDims - 1));
        int const E = static_cast<int>(attrs_.i(op::kNumExpertsAttr)), k = static_cast<int>(attrs_.i(op::kTopKAttr));
        int const H = static_cast<int>(attrs_.i(op::kHiddenSizeAttr));
        int const I = static_cast<int>(attrs_.i(op::kIntermediateSizeAttr));
        auto const u8 = [&](int port) { return static_cast<uint8_t const*>(inputs[port]); };
        auto const f32 = [&](int port) { return static_cast<float const*>(inputs[port]); };
        // enqueue does not receive nbInputs: configure/onShapeChange recorded whether new_len exists.
        int const batch = has_new_len_ ? static_cast<int>(in[op::kNewLenIn].dims.d[0]) : 1;
        int const* new_len = has_new_len_ ? static_cast<int const*>(inputs[op::kNewLenIn]) : nullptr;
        int const status = gpe_moe_mxfp4(to_gpe_dtype(in[op::kHiddenIn].type), GPE_PATH_AUTO, tokens, E, k, H, I,
            attrs_.f(op::kSwigluLimitAttr), attrs_.f(op::kSwigluAlphaAttr), attrs_.f(op::kSwigluLinearOffsetAttr),
            inputs[op::kHiddenIn], batch, new_len, f32(op::kRouterWeightIn), f32(op::kRouterBiasIn), u8(op::kGateUpBlocksIn),
            u8(op::kGateUpScalesIn), f32(op::kGateUpBiasIn), u8(op::kDownBlocksIn), u8(op::kDownScalesIn),
            f32(op::kDownBiasIn), outputs[op::kOutputOut], workspace,
            workspace_available(gpe_moe_mxfp4_workspace_size(tokens, E, k, H, I)), stream);
        return report_status(op::kOpType, status);
    });
}

} // namespace gpe
