// TensorRT glue shared by the three plugins: logging through the TensorRT logger, the
// exception firewall, attribute parsing/serialization driven by the generated op-set tables,
// dtype checks from the generated port masks, and the IPluginV3 boilerplate (PluginBase).
// Nothing here throws into TensorRT: every entry point TensorRT calls is wrapped by `guarded`.
#pragma once
#include "gpe_api.h"
#include "opset_generated.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpe
{
namespace opset = ::gptoss_edge::opset;

// ---- logging & exception firewall -----------------------------------------------------------
void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
inline void log_error(std::string const& message) noexcept { log(nvinfer1::ILogger::Severity::kERROR, message); }

// Run fn(); an exception becomes a logged error and `on_error`. fn must return R.
template <typename R, typename Fn>
R guarded(char const* where, R on_error, Fn&& fn) noexcept
{
    try
    {
        return fn();
    }
    catch (std::exception const& e)
    {
        log_error(std::string(where) + ": " + e.what());
    }
    catch (...)
    {
        log_error(std::string(where) + ": unknown exception");
    }
    return on_error;
}

// ---- attributes ------------------------------------------------------------------------------
struct AttrValue
{
    int64_t i = 0;
    double f = 0.0;
    std::string s;
};

// Parsed attributes of one op, indexed by the generated Attr enum of that op.
class Attrs
{
public:
    // Throws std::invalid_argument naming the op and the attribute on a missing/mistyped field.
    Attrs(char const* op_type, opset::AttrDesc const* descs, int count, nvinfer1::PluginFieldCollection const* fc);

    int64_t i(int index) const { return values_.at(index).i; }
    float f(int index) const { return static_cast<float>(values_.at(index).f); }
    std::string const& s(int index) const { return values_.at(index).s; }
    // "name=value name=value" for the given attribute indices (error messages).
    std::string describe(std::initializer_list<int> indices) const;

    // Fields for IPluginV3OneRuntime::getFieldsToSerialize (pointers stay valid while *this lives):
    // the attributes, plus kWorkspaceField once a workspace size was recorded.
    nvinfer1::PluginFieldCollection const* fields();

    // Workspace bytes TensorRT gives enqueue: what getWorkspaceSize returned for the profile's
    // max shapes at build time (enqueue is not told), carried into the engine as the glue field
    // kWorkspaceField; 0 = unknown. Recorded from the const getWorkspaceSize, hence mutable.
    static constexpr char const* kWorkspaceField = "gpe_workspace_bytes";
    int64_t workspace_bytes() const { return workspace_bytes_; }
    void record_workspace_bytes(int64_t bytes) const { workspace_bytes_ = bytes; }

private:
    opset::AttrDesc const* descs_;
    mutable int64_t workspace_bytes_ = 0;
    std::vector<AttrValue> values_;
    std::vector<int32_t> ints_;
    std::vector<float> floats_;
    std::vector<nvinfer1::PluginField> fields_;
    nvinfer1::PluginFieldCollection collection_{};
};

// Field names advertised by a creator (from the generated AttrDesc table).
class FieldNames
{
public:
    FieldNames(opset::AttrDesc const* descs, int count);
    nvinfer1::PluginFieldCollection const* get() const { return &collection_; }

private:
    std::vector<nvinfer1::PluginField> fields_;
    nvinfer1::PluginFieldCollection collection_{};
};

// ---- dtypes ----------------------------------------------------------------------------------
bool is_activation(nvinfer1::DataType t);
// Does `t` satisfy a generated port mask? (kDtypeT must equal `activation`.)
bool dtype_matches(uint32_t mask, nvinfer1::DataType t, nvinfer1::DataType activation);
int to_gpe_dtype(nvinfer1::DataType t); // GPE_DTYPE_* or GPE_ERR_BAD_DTYPE
int64_t volume(nvinfer1::Dims const& d, int begin, int end);
std::string dims_str(nvinfer1::Dims const& d);

// Log and convert a launcher status to TensorRT's int32 convention (0 = success).
int32_t report_status(char const* op_type, int status) noexcept;

// ---- IPluginV3 boilerplate -------------------------------------------------------------------
// Derived provides: clone_impl() (new Derived(*this)), getOutputShapes, configure(in/out),
// getWorkspaceSize, enqueue, and may override extra_format_check / getAliasedInput.
// Op: the generated namespace struct adaptor (see OP_TRAITS below).
template <typename Op>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuildV2,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit PluginBase(Attrs attrs) : attrs_(std::move(attrs)) {}
    PluginBase(PluginBase const& other) : attrs_(other.attrs_) {}

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    nvinfer1::IPluginV3* clone() noexcept override
    {
        return guarded<nvinfer1::IPluginV3*>(Op::kOpType, nullptr, [&] { return clone_impl(); });
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return Op::kOpType; }
    char const* getPluginVersion() const noexcept override { return Op::kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return opset::kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return Op::kNbOutputs; }
    int32_t getOutputDataTypes(nvinfer1::DataType* out, int32_t nb_out, nvinfer1::DataType const* in,
        int32_t nb_in) const noexcept override
    {
        if (nb_out != Op::kNbOutputs || nb_in < 1)
            return -1;
        nvinfer1::DataType const act = in[0]; // port 0 is typed T for every op of the op set
        for (int32_t o = 0; o < nb_out; ++o)
        {
            uint32_t const mask = Op::kOutputs[o].dtypes;
            if (mask == opset::kDtypeT)
                out[o] = act;
            else if (mask == opset::kDtypeInt32)
                out[o] = nvinfer1::DataType::kINT32;
            else
                out[o] = nvinfer1::DataType::kFLOAT;
        }
        return 0;
    }
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* io, int32_t nb_in,
        int32_t nb_out) noexcept override
    {
        return guarded<bool>(Op::kOpType, false, [&] {
            auto const& d = io[pos].desc;
            if (d.format != nvinfer1::TensorFormat::kLINEAR)
                return false;
            if (pos == 0)
                return is_activation(d.type);
            nvinfer1::DataType const act = io[0].desc.type;
            uint32_t const mask = pos < nb_in ? port_mask_in(pos, nb_in) : Op::kOutputs[pos - nb_in].dtypes;
            return dtype_matches(mask, d.type, act) && extra_format_check(pos, io, nb_in, nb_out);
        });
    }
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) noexcept override
    {
        return guarded<int32_t>(Op::kOpType, -1, [&] { return configure(in, nb_in, out, nb_out); });
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
        int32_t) noexcept override
    {
        return 0;
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return guarded<nvinfer1::PluginFieldCollection const*>(Op::kOpType, nullptr, [&] { return attrs_.fields(); });
    }

protected:
    virtual nvinfer1::IPluginV3* clone_impl() = 0;
    virtual int32_t configure(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_in,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nb_out) = 0;
    virtual bool extra_format_check(int32_t, nvinfer1::DynamicPluginTensorDesc const*, int32_t, int32_t)
    {
        return true;
    }
    // A port of a node with optional trailing inputs absent keeps its generated index.
    static uint32_t port_mask_in(int32_t pos, int32_t) { return Op::kInputs[pos].dtypes; }
    // getWorkspaceSize: remember the size (serialized with the attributes) and return it.
    size_t record_workspace(size_t bytes) const
    {
        attrs_.record_workspace_bytes(static_cast<int64_t>(bytes));
        return bytes;
    }
    // The size to hand a launcher as available: the recorded one, so that a launch needing more
    // fails with GPE_ERR_WORKSPACE_TOO_SMALL instead of overrunning; `required` (no check
    // possible) only for an engine whose plugin never had getWorkspaceSize called.
    size_t workspace_available(size_t required) const
    {
        return attrs_.workspace_bytes() > 0 ? static_cast<size_t>(attrs_.workspace_bytes()) : required;
    }

    Attrs attrs_;
};

// Creator for PluginT (constructor PluginT(Attrs)), names and fields from the generated table.
template <typename Op, typename PluginT>
class Creator : public nvinfer1::IPluginCreatorV3One
{
public:
    Creator() : names_(Op::kAttrs, Op::kNbAttrs) {}
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase) noexcept override
    {
        return guarded<nvinfer1::IPluginV3*>(Op::kOpType, nullptr, [&]() -> nvinfer1::IPluginV3* {
            Attrs attrs(Op::kOpType, Op::kAttrs, Op::kNbAttrs, fc);
            std::string const problem = PluginT::validate(attrs);
            if (!problem.empty())
            {
                log_error(std::string(Op::kOpType) + " node '" + (name ? name : "") + "': " + problem);
                return nullptr;
            }
            return new PluginT(std::move(attrs));
        });
    }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return names_.get(); }
    char const* getPluginName() const noexcept override { return Op::kOpType; }
    char const* getPluginVersion() const noexcept override { return Op::kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return opset::kPluginNamespace; }

private:
    FieldNames names_;
};

} // namespace gpe

// Adaptor: the generated namespace `ns` as a type usable as the Op template argument.
#define GPE_OP_TRAITS(Name, ns)                                                                   \
    struct Name                                                                                   \
    {                                                                                             \
        static constexpr char const* kOpType = ns::kOpType;                                       \
        static constexpr char const* kPluginVersion = ns::kPluginVersion;                         \
        static constexpr int kNbInputs = ns::kNbInputs;                                           \
        static constexpr int kNbOutputs = ns::kNbOutputs;                                         \
        static constexpr int kNbAttrs = ns::kNbAttrs;                                             \
        static constexpr auto const& kAttrs = ns::kAttrs;                                         \
        static constexpr auto const& kInputs = ns::kInputs;                                       \
        static constexpr auto const& kOutputs = ns::kOutputs;                                     \
    }

namespace gpe
{
// Throws std::invalid_argument unless dims has `rank` axes (rank < 0: at least -rank axes).
void expect_rank(char const* op_type, char const* port, nvinfer1::Dims const& dims, int rank);
// Throws unless axis `axis` of dims is unknown (-1, build time) or equals `expected`.
void expect_dim(char const* op_type, char const* port, nvinfer1::Dims const& dims, int axis, int64_t expected);
} // namespace gpe
