// SinkAttention TensorRT IPluginV3 glue: shapes, KV-cache aliasing (present_* -> past_*),
// workspace, enqueue -> gpe_sink_attention.
#pragma once
#include "../common/plugin_utils.h"

namespace gpe
{
GPE_OP_TRAITS(SinkAttentionOp, opset::sink_attention);

class SinkAttentionPlugin : public PluginBase<SinkAttentionOp>
{
public:
    explicit SinkAttentionPlugin(Attrs attrs) : PluginBase<SinkAttentionOp>(std::move(attrs)) {}
    static std::string validate(Attrs const& attrs);

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_in, nvinfer1::DimsExprs const* shape_inputs,
        int32_t nb_shape_inputs, nvinfer1::DimsExprs* outputs, int32_t nb_out,
        nvinfer1::IExprBuilder& builder) noexcept override;
    // present_key/present_value update past_key/past_value in place when TensorRT honours it
    // (PreviewFeature::kALIASED_PLUGIN_IO_10_03); otherwise the kernel copies past -> present.
    int32_t getAliasedInput(int32_t output_index) noexcept override;
    // Runtime shapes: the ports agree on batch, sequence and cache shape (build time may not know).
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_in, nvinfer1::PluginTensorDesc const* out,
        int32_t nb_out) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    nvinfer1::IPluginV3* clone_impl() override { return new SinkAttentionPlugin(*this); }
    int32_t configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) override;
};

using SinkAttentionCreator = Creator<SinkAttentionOp, SinkAttentionPlugin>;
} // namespace gpe
