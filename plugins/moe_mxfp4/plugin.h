// MoeMxfp4 TensorRT IPluginV3 glue: shapes, dtypes, workspace, enqueue -> gpe_moe_mxfp4.
#pragma once
#include "../common/plugin_utils.h"

namespace gpe
{
GPE_OP_TRAITS(MoeOp, opset::moe_mxfp4);

class MoePlugin : public PluginBase<MoeOp>
{
public:
    explicit MoePlugin(Attrs attrs) : PluginBase<MoeOp>(std::move(attrs)) {}
    // Empty string when the attributes are usable, else the problem (creator logs it).
    static std::string validate(Attrs const& attrs);

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_in, nvinfer1::DimsExprs const* shape_inputs,
        int32_t nb_shape_inputs, nvinfer1::DimsExprs* outputs, int32_t nb_out,
        nvinfer1::IExprBuilder& builder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) const noexcept override;
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_in, nvinfer1::PluginTensorDesc const* out,
        int32_t nb_out) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    nvinfer1::IPluginV3* clone_impl() override { return new MoePlugin(*this); }
    int32_t configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) override;

private:
    bool has_new_len_ = false; // the optional new_len input is connected (seen in configure/onShapeChange)
};

using MoeCreator = Creator<MoeOp, MoePlugin>;
} // namespace gpe
