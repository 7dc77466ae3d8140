// Gemm4bit TensorRT IPluginV3 glue: shapes, dtypes (scales by format), enqueue -> gpe_gemm_4bit.
#pragma once
#include "../common/plugin_utils.h"

namespace gpe
{
GPE_OP_TRAITS(Gemm4bitOp, opset::gemm4bit);

class Gemm4bitPlugin : public PluginBase<Gemm4bitOp>
{
public:
    explicit Gemm4bitPlugin(Attrs attrs);
    static std::string validate(Attrs const& attrs);

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_in, nvinfer1::DimsExprs const* shape_inputs,
        int32_t nb_shape_inputs, nvinfer1::DimsExprs* outputs, int32_t nb_out,
        nvinfer1::IExprBuilder& builder) noexcept override;
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_in, nvinfer1::PluginTensorDesc const* out,
        int32_t nb_out) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    nvinfer1::IPluginV3* clone_impl() override { return new Gemm4bitPlugin(*this); }
    int32_t configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) override;
    bool extra_format_check(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* io, int32_t nb_in,
        int32_t nb_out) override;

private:
    int format_;            // GPE_W4_MXFP4 or GPE_W4_INT4
    bool has_bias_ = false; // the optional bias input is connected (seen in configure/onShapeChange)
};

using Gemm4bitCreator = Creator<Gemm4bitOp, Gemm4bitPlugin>;
} // namespace gpe
