// Gemm4bit TensorRT glue. Port indices, attribute names and format values: generated header.
#include "plugin.h"

#include "kernel.h"

#include <cstring>

namespace gpe
{
namespace op = opset::gemm4bit;

namespace
{
int parse_format(std::string const& f)
{
    if (f == op::kFormatMxfp4)
        return GPE_W4_MXFP4;
    if (f == op::kFormatInt4)
        return GPE_W4_INT4;
    return -1;
}
} // namespace

Gemm4bitPlugin::Gemm4bitPlugin(Attrs attrs)
    : PluginBase<Gemm4bitOp>(std::move(attrs))
    , format_(parse_format(attrs_.s(op::kFormatAttr)))
{
}

std::string Gemm4bitPlugin::validate(Attrs const& a)
{
    if (parse_format(a.s(op::kFormatAttr)) < 0)
        return std::string("attribute '") + op::kAttrs[op::kFormatAttr].name + "' is '" + a.s(op::kFormatAttr)
            + "', expected '" + op::kFormatMxfp4 + "' or '" + op::kFormatInt4 + "'";
    int64_t const K = a.i(op::kInFeaturesAttr), N = a.i(op::kOutFeaturesAttr);
    if (K < 32 || K % 32 != 0 || N < 1)
    {
        char const* k_name = op::kAttrs[op::kInFeaturesAttr].name;
        char const* n_name = op::kAttrs[op::kOutFeaturesAttr].name;
        return std::string(k_name) + " must be a positive multiple of 32 and " + n_name + " >= 1, got " + k_name + "="
            + std::to_string(K) + " " + n_name + "=" + std::to_string(N);
    }
    return {};
}

bool Gemm4bitPlugin::extra_format_check(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* io, int32_t, int32_t)
{
    if (pos != op::kWeightScalesIn)
        return true;
    auto const t = io[pos].desc.type;
    return format_ == GPE_W4_INT4 ? t == nvinfer1::DataType::kHALF
                                  : t == nvinfer1::DataType::kUINT8 || t == nvinfer1::DataType::kINT8;
}

int32_t Gemm4bitPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_in, nvinfer1::DimsExprs const*,
    int32_t, nvinfer1::DimsExprs* outputs, int32_t nb_out, nvinfer1::IExprBuilder& builder) noexcept
{
    if (nb_in < op::kNbInputs - 1 || nb_in > op::kNbInputs || nb_out != op::kNbOutputs)
        return -1;
    nvinfer1::DimsExprs out = inputs[op::kInputIn]; // [*, in_features] -> [*, out_features]
    if (out.nbDims < 1)
        return -1;
    out.d[out.nbDims - 1] = builder.constant(attrs_.i(op::kOutFeaturesAttr));
    outputs[op::kOutputOut] = out;
    return 0;
}

int32_t Gemm4bitPlugin::configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
    nvinfer1::DynamicPluginTensorDesc const*, int32_t nb_out)
{
    if (nb_in < op::kNbInputs - 1 || nb_in > op::kNbInputs || nb_out != op::kNbOutputs)
        return -1;
    int64_t const K = attrs_.i(op::kInFeaturesAttr), N = attrs_.i(op::kOutFeaturesAttr);
    auto const& x = in[op::kInputIn].desc.dims;
    expect_rank(op::kOpType, op::kInputs[op::kInputIn].name, x, -1);
    expect_dim(op::kOpType, op::kInputs[op::kInputIn].name, x, x.nbDims - 1, K);
    auto const& blocks = in[op::kWeightBlocksIn].desc.dims;
    char const* bname = op::kInputs[op::kWeightBlocksIn].name;
    expect_rank(op::kOpType, bname, blocks, 3);
    expect_dim(op::kOpType, bname, blocks, 0, N);
    expect_dim(op::kOpType, bname, blocks, 1, K / 32);
    expect_dim(op::kOpType, bname, blocks, 2, 16);
    auto const& scales = in[op::kWeightScalesIn].desc.dims;
    char const* sname = op::kInputs[op::kWeightScalesIn].name;
    expect_rank(op::kOpType, sname, scales, 2);
    expect_dim(op::kOpType, sname, scales, 0, N);
    expect_dim(op::kOpType, sname, scales, 1, K / 32);
    has_bias_ = nb_in == op::kNbInputs;
    if (has_bias_)
    {
        expect_rank(op::kOpType, op::kInputs[op::kBiasIn].name, in[op::kBiasIn].desc.dims, 1);
        expect_dim(op::kOpType, op::kInputs[op::kBiasIn].name, in[op::kBiasIn].desc.dims, 0, N);
    }
    return 0;
}

int32_t Gemm4bitPlugin::onShapeChange(
    nvinfer1::PluginTensorDesc const*, int32_t nb_in, nvinfer1::PluginTensorDesc const*, int32_t) noexcept
{
    has_bias_ = nb_in == op::kNbInputs; // TensorRT calls this before the first enqueue of a context
    return 0;
}

int32_t Gemm4bitPlugin::enqueue(nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const*,
    void const* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept
{
    return guarded<int32_t>(op::kOpType, -1, [&] {
        nvinfer1::Dims const& xd = in[op::kInputIn].dims;
        // enqueue does not receive nbInputs: configure/onShapeChange recorded whether bias exists.
        float const* bias = has_bias_ ? static_cast<float const*>(inputs[op::kBiasIn]) : nullptr;
        int const status = gpe_gemm_4bit(to_gpe_dtype(in[op::kInputIn].type), format_, GPE_PATH_AUTO,
            volume(xd, 0, xd.nbDims - 1), static_cast<int>(attrs_.i(op::kInFeaturesAttr)),
            static_cast<int>(attrs_.i(op::kOutFeaturesAttr)), inputs[op::kInputIn],
            static_cast<uint8_t const*>(inputs[op::kWeightBlocksIn]), inputs[op::kWeightScalesIn], bias,
            outputs[op::kOutputOut], stream);
        return report_status(op::kOpType, status);
    });
}

} // namespace gpe
