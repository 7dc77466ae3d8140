// Implementation of the shared TensorRT glue helpers (see plugin_utils.h).
#include "plugin_utils.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace gpe
{

namespace
{
std::atomic<nvinfer1::ILoggerFinder*> g_logger_finder{nullptr};

bool is_int_field(nvinfer1::PluginFieldType t)
{
    using T = nvinfer1::PluginFieldType;
    return t == T::kINT32 || t == T::kINT64 || t == T::kINT16 || t == T::kINT8;
}

int64_t read_int(nvinfer1::PluginField const& f)
{
    using T = nvinfer1::PluginFieldType;
    switch (f.type)
    {
    case T::kINT64: return *static_cast<int64_t const*>(f.data);
    case T::kINT32: return *static_cast<int32_t const*>(f.data);
    case T::kINT16: return *static_cast<int16_t const*>(f.data);
    default: return *static_cast<int8_t const*>(f.data);
    }
}

bool read_float(nvinfer1::PluginField const& f, double& out)
{
    using T = nvinfer1::PluginFieldType;
    if (f.type == T::kFLOAT32)
        out = *static_cast<float const*>(f.data);
    else if (f.type == T::kFLOAT64)
        out = *static_cast<double const*>(f.data);
    else if (is_int_field(f.type)) // ONNX may carry an integral float attribute as int
        out = static_cast<double>(read_int(f));
    else
        return false;
    return true;
}

} // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept { g_logger_finder.store(finder); }

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = std::string("[gptoss_edge plugins] ") + message;
        nvinfer1::ILoggerFinder* finder = g_logger_finder.load();
        nvinfer1::ILogger* logger = finder ? finder->findLogger() : nullptr;
        if (logger)
            logger->log(severity, text.c_str());
        else
            std::fprintf(stderr, "%s\n", text.c_str());
    }
    catch (...)
    {
    }
}

int32_t report_status(char const* op_type, int status) noexcept
{
    if (status == GPE_OK)
        return 0;
    log_error(std::string(op_type) + " enqueue failed: " + gpe_status_string(status));
    return status;
}

Attrs::Attrs(char const* op_type, opset::AttrDesc const* descs, int count, nvinfer1::PluginFieldCollection const* fc)
    : descs_(descs), values_(count)
{
    std::vector<bool> seen(count, false);
    int const nb = fc ? fc->nbFields : 0;
    for (int k = 0; k < nb; ++k)
    {
        nvinfer1::PluginField const& f = fc->fields[k];
        bool lookup_attr = false;
        for (int a = 0; a < opset::kNbPluginAttrs; ++a)
            lookup_attr |= f.name && std::strcmp(f.name, opset::kPluginAttrs[a]) == 0;
        if (lookup_attr)
            continue; // plugin_version / plugin_namespace, should a parser forward them
        if (f.name && std::strcmp(f.name, kWorkspaceField) == 0)
        {
            if (!f.data || f.length < 1 || !is_int_field(f.type) || read_int(f) < 0)
                throw std::invalid_argument(std::string(op_type) + ": bad glue field '" + kWorkspaceField + "'");
            workspace_bytes_ = read_int(f);
            continue;
        }
        int idx = -1;
        for (int a = 0; a < count; ++a)
            if (f.name && std::strcmp(f.name, descs[a].name) == 0)
                idx = a;
        if (idx < 0)
            throw std::invalid_argument(std::string(op_type) + ": unknown attribute '" + (f.name ? f.name : "") + "'");
        if (!f.data || f.length < 1)
            throw std::invalid_argument(std::string(op_type) + ": attribute '" + f.name + "' has no data");
        AttrValue& v = values_[idx];
        bool ok = true;
        switch (descs[idx].kind)
        {
        case opset::AttrKind::kInt:
            ok = is_int_field(f.type);
            if (ok)
                v.i = read_int(f);
            break;
        case opset::AttrKind::kFloat: ok = read_float(f, v.f); break;
        case opset::AttrKind::kString:
            ok = f.type == nvinfer1::PluginFieldType::kCHAR;
            if (ok) // length may or may not count a terminating NUL
                v.s.assign(static_cast<char const*>(f.data), strnlen(static_cast<char const*>(f.data), f.length));
            break;
        }
        if (!ok)
            throw std::invalid_argument(std::string(op_type) + ": attribute '" + f.name + "' has the wrong field type");
        seen[idx] = true;
    }
    for (int a = 0; a < count; ++a)
    {
        if (seen[a])
            continue;
        if (descs[a].required)
            throw std::invalid_argument(std::string(op_type) + ": required attribute '" + descs[a].name + "' missing");
        values_[a].i = static_cast<int64_t>(descs[a].defaultNumber);
        values_[a].f = descs[a].defaultNumber;
        values_[a].s = descs[a].defaultString;
    }
}

std::string Attrs::describe(std::initializer_list<int> indices) const
{
    std::ostringstream os;
    for (int a : indices)
    {
        os << (os.tellp() > 0 ? " " : "") << descs_[a].name << "=";
        switch (descs_[a].kind)
        {
        case opset::AttrKind::kInt: os << values_.at(a).i; break;
        case opset::AttrKind::kFloat: os << values_.at(a).f; break;
        case opset::AttrKind::kString: os << "'" << values_.at(a).s << "'"; break;
        }
    }
    return os.str();
}

nvinfer1::PluginFieldCollection const* Attrs::fields()
{
    int const count = static_cast<int>(values_.size());
    ints_.assign(count, 0);
    floats_.assign(count, 0.f);
    fields_.clear();
    for (int a = 0; a < count; ++a)
    {
        switch (descs_[a].kind)
        {
        case opset::AttrKind::kInt:
            ints_[a] = static_cast<int32_t>(values_[a].i);
            fields_.emplace_back(descs_[a].name, &ints_[a], nvinfer1::PluginFieldType::kINT32, 1);
            break;
        case opset::AttrKind::kFloat:
            floats_[a] = static_cast<float>(values_[a].f);
            fields_.emplace_back(descs_[a].name, &floats_[a], nvinfer1::PluginFieldType::kFLOAT32, 1);
            break;
        case opset::AttrKind::kString:
            fields_.emplace_back(descs_[a].name, values_[a].s.c_str(), nvinfer1::PluginFieldType::kCHAR,
                static_cast<int32_t>(values_[a].s.size() + 1));
            break;
        }
    }
    if (workspace_bytes_ > 0)
        fields_.emplace_back(kWorkspaceField, &workspace_bytes_, nvinfer1::PluginFieldType::kINT64, 1);
    collection_.nbFields = static_cast<int32_t>(fields_.size());
    collection_.fields = fields_.data();
    return &collection_;
}

FieldNames::FieldNames(opset::AttrDesc const* descs, int count)
{
    for (int a = 0; a < count; ++a)
    {
        auto const type = descs[a].kind == opset::AttrKind::kInt ? nvinfer1::PluginFieldType::kINT32
            : descs[a].kind == opset::AttrKind::kFloat          ? nvinfer1::PluginFieldType::kFLOAT32
                                                                : nvinfer1::PluginFieldType::kCHAR;
        fields_.emplace_back(descs[a].name, nullptr, type, descs[a].kind == opset::AttrKind::kString ? 0 : 1);
    }
    collection_.nbFields = static_cast<int32_t>(fields_.size());
    collection_.fields = fields_.data();
}

bool is_activation(nvinfer1::DataType t)
{
    return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF || t == nvinfer1::DataType::kBF16;
}

bool dtype_matches(uint32_t mask, nvinfer1::DataType t, nvinfer1::DataType activation)
{
    using D = nvinfer1::DataType;
    return ((mask & opset::kDtypeT) && t == activation && is_activation(t))
        || ((mask & opset::kDtypeFloat32) && t == D::kFLOAT) || ((mask & opset::kDtypeFloat16) && t == D::kHALF)
        || ((mask & opset::kDtypeBfloat16) && t == D::kBF16)
        || ((mask & opset::kDtypeUint8) && t == D::kUINT8) || ((mask & opset::kDtypeInt8) && t == D::kINT8)
        || ((mask & opset::kDtypeInt32) && t == D::kINT32) || ((mask & opset::kDtypeInt64) && t == D::kINT64);
}

int to_gpe_dtype(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return GPE_DTYPE_FLOAT32;
    case nvinfer1::DataType::kHALF: return GPE_DTYPE_FLOAT16;
    case nvinfer1::DataType::kBF16: return GPE_DTYPE_BFLOAT16;
    default: return GPE_ERR_BAD_DTYPE;
    }
}

int64_t volume(nvinfer1::Dims const& d, int begin, int end)
{
    int64_t v = 1;
    for (int i = begin; i < end; ++i)
        v *= d.d[i];
    return v;
}

std::string dims_str(nvinfer1::Dims const& d)
{
    std::ostringstream os;
    os << "[";
    for (int i = 0; i < d.nbDims; ++i)
        os << (i ? ", " : "") << d.d[i];
    os << "]";
    return os.str();
}

} // namespace gpe

namespace gpe
{
void expect_rank(char const* op_type, char const* port, nvinfer1::Dims const& dims, int rank)
{
    bool const ok = rank >= 0 ? dims.nbDims == rank : dims.nbDims >= -rank;
    if (!ok)
        throw std::invalid_argument(std::string(op_type) + ": input '" + port + "' has shape " + dims_str(dims)
            + ", expected " + (rank >= 0 ? "rank " : "rank >= ") + std::to_string(rank >= 0 ? rank : -rank));
}

void expect_dim(char const* op_type, char const* port, nvinfer1::Dims const& dims, int axis, int64_t expected)
{
    int64_t const got = dims.d[axis];
    if (got >= 0 && got != expected)
        throw std::invalid_argument(std::string(op_type) + ": input '" + port + "' has shape " + dims_str(dims)
            + ", axis " + std::to_string(axis) + " must be " + std::to_string(expected));
}
} // namespace gpe
