// CPU self-test of the TensorRT glue against real TensorRT headers, without TensorRT's library
// and without a GPU: the creators from getCreators() are driven the way TensorRT's builder and
// runtime drive them (create from fields, serialize, re-create, format negotiation, output
// types/shapes, configure with good and bad shapes, workspace, aliasing). Errors must arrive
// through the logger set by setLoggerFinder, naming the attribute or port. Exit code 0 = pass.
// Built and run by tests/test_plugins_build.py (links the kernel objects; no kernel is launched).
#include "../common/opset_generated.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;
namespace ops = gptoss_edge::opset;

extern "C" void setLoggerFinder(ILoggerFinder* finder) noexcept;
extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept;

namespace
{
int g_failures = 0;
#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                           \
            ++g_failures;                                                                         \
        }                                                                                         \
    } while (0)

struct CaptureLogger : ILogger
{
    std::string last;
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
            last = msg;
    }
};
struct Finder : ILoggerFinder
{
    CaptureLogger logger;
    ILogger* findLogger() override { return &logger; }
};
Finder g_finder;

bool logged(char const* needle)
{
    bool const hit = g_finder.logger.last.find(needle) != std::string::npos;
    if (!hit)
        std::printf("  expected log containing '%s', last log: '%s'\n", needle, g_finder.logger.last.c_str());
    g_finder.logger.last.clear();
    return hit;
}

IPluginCreatorV3One* creator(char const* op_type)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* list = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        if (std::strcmp(c->getPluginName(), op_type) == 0)
            return c;
    }
    return nullptr;
}

// Owns field storage for a PluginFieldCollection.
struct Fields
{
    std::vector<int32_t> ints;
    std::vector<float> floats;
    std::vector<std::string> strings;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};
    Fields() { ints.reserve(16), floats.reserve(16), strings.reserve(16); }
    Fields& i(char const* name, int32_t v)
    {
        ints.push_back(v);
        fields.emplace_back(name, &ints.back(), PluginFieldType::kINT32, 1);
        return *this;
    }
    Fields& f(char const* name, float v)
    {
        floats.push_back(v);
        fields.emplace_back(name, &floats.back(), PluginFieldType::kFLOAT32, 1);
        return *this;
    }
    Fields& s(char const* name, char const* v)
    {
        strings.emplace_back(v);
        fields.emplace_back(name, strings.back().c_str(), PluginFieldType::kCHAR, int32_t(strings.back().size() + 1));
        return *this;
    }
    PluginFieldCollection const* get()
    {
        fc.nbFields = int32_t(fields.size());
        fc.fields = fields.data();
        return &fc;
    }
};

Dims dims(std::initializer_list<int64_t> v)
{
    Dims d{};
    d.nbDims = int32_t(v.size());
    int i = 0;
    for (int64_t x : v)
        d.d[i++] = x;
    return d;
}

DynamicPluginTensorDesc desc(Dims d, DataType t)
{
    DynamicPluginTensorDesc x{};
    x.desc.dims = d;
    x.desc.type = t;
    x.desc.format = TensorFormat::kLINEAR;
    x.min = x.max = x.opt = d;
    return x;
}

// A constant-only IExprBuilder (TensorRT's public pimpl interfaces): enough for output shapes
// that copy input expressions or use builder.constant().
struct ConstImpl : apiv::VDimensionExpr
{
    int64_t value = 0;
    bool isConstant() const override { return true; }
    int64_t getConstantValue() const override { return value; }
    bool isSizeTensor() const override { return false; }
};
struct ConstExpr : IDimensionExpr
{
    ConstImpl impl;
    explicit ConstExpr(int64_t v)
    {
        impl.value = v;
        mImpl = &impl;
    }
};
struct BuilderImpl : apiv::VExprBuilder
{
    std::vector<std::unique_ptr<ConstExpr>> made;
    IDimensionExpr const* constant(int64_t v) override
    {
        made.push_back(std::make_unique<ConstExpr>(v));
        return made.back().get();
    }
    IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }
};
struct ConstBuilder : IExprBuilder
{
    BuilderImpl impl;
    ConstBuilder() { mImpl = &impl; }
};

DimsExprs const_dims(ConstBuilder& b, std::initializer_list<int64_t> v)
{
    DimsExprs e{};
    e.nbDims = int32_t(v.size());
    int i = 0;
    for (int64_t x : v)
        e.d[i++] = b.constant(x);
    return e;
}

IPluginV3OneBuildV2* build_of(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuildV2*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime_of(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

// Every io position accepted for `types`, in TensorRT's left-to-right negotiation order.
// Never dereferenced: the launches below are refused on the host before touching memory.
void* fake_ptr() { return reinterpret_cast<void*>(uintptr_t(1) << 40); }

// enqueue with io's descs (dims replaced by `runtime`, one entry per io position) and fake
// pointers; returns the status.
int32_t enqueue_with(IPluginV3* p, std::vector<DynamicPluginTensorDesc> const& io, int nb_in,
    std::vector<Dims> const& runtime)
{
    std::vector<PluginTensorDesc> d;
    for (size_t i = 0; i < io.size(); ++i)
    {
        d.push_back(io[i].desc);
        d.back().dims = runtime[i];
    }
    std::vector<void const*> ins(nb_in, fake_ptr());
    std::vector<void*> outs(io.size() - nb_in, fake_ptr());
    int const nb_out = int(io.size()) - nb_in;
    if (runtime_of(p)->onShapeChange(d.data(), nb_in, d.data() + nb_in, nb_out) != 0)
        return -1;
    return runtime_of(p)->enqueue(d.data(), d.data() + nb_in, ins.data(), outs.data(), fake_ptr(), nullptr);
}

bool accepts(IPluginV3* p, std::vector<DynamicPluginTensorDesc> io, int nb_in)
{
    for (size_t pos = 0; pos < io.size(); ++pos)
        if (!build_of(p)->supportsFormatCombination(int32_t(pos), io.data(), nb_in, int32_t(io.size()) - nb_in))
            return false;
    return true;
}

void test_registry()
{
    int32_t n = 0;
    getCreators(n);
    CHECK(n == 3);
    for (char const* op : {ops::moe_mxfp4::kOpType, ops::gemm4bit::kOpType, ops::sink_attention::kOpType})
    {
        IPluginCreatorV3One* c = creator(op);
        CHECK(c != nullptr);
        if (c)
            CHECK(std::strcmp(c->getPluginNamespace(), ops::kPluginNamespace) == 0);
    }
    PluginFieldCollection const* names = creator(ops::moe_mxfp4::kOpType)->getFieldNames();
    CHECK(names->nbFields == ops::moe_mxfp4::kNbAttrs);
}

void test_moe()
{
    namespace m = ops::moe_mxfp4;
    auto const A = [](int a) { return m::kAttrs[a].name; };
    IPluginCreatorV3One* c = creator(m::kOpType);
    int const E = 32, k = 4, H = 2880, I = 2880;
    Fields good;
    good.i(A(m::kNumExpertsAttr), E).i(A(m::kTopKAttr), k).i(A(m::kHiddenSizeAttr), H).i(A(m::kIntermediateSizeAttr), I);
    IPluginV3* p = c->createPlugin("moe", good.get(), TensorRTPhase::kBUILD);
    CHECK(p != nullptr);
    if (!p)
        return;

    Fields missing;
    missing.i(A(m::kNumExpertsAttr), E);
    CHECK(c->createPlugin("moe", missing.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged(A(m::kTopKAttr)));
    Fields unknown = good;
    unknown.fields.clear();
    unknown.i(A(m::kNumExpertsAttr), E).i(A(m::kTopKAttr), k).i(A(m::kHiddenSizeAttr), H);
    unknown.i(A(m::kIntermediateSizeAttr), I).i("no_such_attribute", 1);
    CHECK(c->createPlugin("moe", unknown.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged("no_such_attribute"));
    Fields bad_k;
    bad_k.i(A(m::kNumExpertsAttr), E).i(A(m::kTopKAttr), 64).i(A(m::kHiddenSizeAttr), H).i(A(m::kIntermediateSizeAttr), I);
    CHECK(c->createPlugin("moe", bad_k.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged("top_k=64"));
    Fields with_lookup_attrs = good; // plugin_version / plugin_namespace are not plugin fields
    with_lookup_attrs.fields.clear();
    with_lookup_attrs.i(A(m::kNumExpertsAttr), E).i(A(m::kTopKAttr), k).i(A(m::kHiddenSizeAttr), H);
    with_lookup_attrs.i(A(m::kIntermediateSizeAttr), I).s(ops::kPluginAttrs[0], m::kPluginVersion);
    IPluginV3* lookup = c->createPlugin("moe", with_lookup_attrs.get(), TensorRTPhase::kBUILD);
    CHECK(lookup != nullptr);
    delete lookup;

    // serialize -> deserialize keeps every attribute, defaults included
    PluginFieldCollection const* ser = runtime_of(p)->getFieldsToSerialize();
    CHECK(ser && ser->nbFields == m::kNbAttrs);
    IPluginV3* q = c->createPlugin("moe", ser, TensorRTPhase::kRUNTIME);
    CHECK(q != nullptr);
    PluginFieldCollection const* ser2 = runtime_of(q)->getFieldsToSerialize();
    for (int a = 0; a < m::kNbAttrs; ++a)
        CHECK(std::memcmp(ser->fields[a].data, ser2->fields[a].data, 4) == 0);
    CHECK(*static_cast<float const*>(ser->fields[m::kSwigluLimitAttr].data) == float(m::kAttrs[m::kSwigluLimitAttr].defaultNumber));

    std::vector<DynamicPluginTensorDesc> io = {
        desc(dims({-1, H}), DataType::kHALF),
        desc(dims({E, H}), DataType::kFLOAT),
        desc(dims({E}), DataType::kFLOAT),
        desc(dims({E, 2 * I, H / 32, 16}), DataType::kUINT8),
        desc(dims({E, 2 * I, H / 32}), DataType::kUINT8),
        desc(dims({E, 2 * I}), DataType::kFLOAT),
        desc(dims({E, H, I / 32, 16}), DataType::kUINT8),
        desc(dims({E, H, I / 32}), DataType::kUINT8),
        desc(dims({E, H}), DataType::kFLOAT),
        desc(dims({-1}), DataType::kINT32), // new_len [batch] (optional)
        desc(dims({-1, H}), DataType::kHALF),
    };
    CHECK(accepts(p, io, m::kNbInputs));
    auto float_len = io;
    float_len[m::kNewLenIn].desc.type = DataType::kFLOAT;
    CHECK(!accepts(p, float_len, m::kNbInputs));
    auto int8_bytes = io; // TensorRT graphs carry the packed bytes as INT8 (same bits)
    for (int port : {m::kGateUpBlocksIn, m::kGateUpScalesIn, m::kDownBlocksIn, m::kDownScalesIn})
        int8_bytes[port].desc.type = DataType::kINT8;
    CHECK(accepts(p, int8_bytes, m::kNbInputs));
    auto bf16 = io;
    bf16[m::kHiddenIn].desc.type = bf16[m::kNbInputs].desc.type = DataType::kBF16;
    CHECK(accepts(p, bf16, m::kNbInputs));
    auto mixed = io;
    mixed[m::kNbInputs].desc.type = DataType::kFLOAT; // output must follow hidden
    CHECK(!accepts(p, mixed, m::kNbInputs));
    auto half_router = io;
    half_router[m::kRouterWeightIn].desc.type = DataType::kHALF;
    CHECK(!accepts(p, half_router, m::kNbInputs));

    DataType in_types[m::kNbInputs], out_type{};
    for (int i = 0; i < m::kNbInputs; ++i)
        in_types[i] = io[i].desc.type;
    CHECK(build_of(p)->getOutputDataTypes(&out_type, 1, in_types, m::kNbInputs) == 0 && out_type == DataType::kHALF);

    CHECK(build_of(p)->configurePlugin(io.data(), m::kNbInputs, io.data() + m::kNbInputs, 1) == 0);
    auto wrong = io;
    wrong[m::kDownScalesIn].desc.dims = dims({E, H, I / 16});
    CHECK(build_of(p)->configurePlugin(wrong.data(), m::kNbInputs, wrong.data() + m::kNbInputs, 1) != 0);
    CHECK(logged(m::kInputs[m::kDownScalesIn].name));
    auto len_2d = io;
    len_2d[m::kNewLenIn].desc.dims = dims({2, 3});
    CHECK(build_of(p)->configurePlugin(len_2d.data(), m::kNbInputs, len_2d.data() + m::kNbInputs, 1) != 0);
    CHECK(logged(m::kInputs[m::kNewLenIn].name));
    auto no_len = io; // a node without the optional new_len: every token is real
    no_len.erase(no_len.begin() + m::kNewLenIn);
    CHECK(accepts(p, no_len, m::kNbInputs - 1));
    CHECK(build_of(p)->configurePlugin(no_len.data(), m::kNbInputs - 1, no_len.data() + m::kNbInputs - 1, 1) == 0);
    CHECK(build_of(p)->configurePlugin(io.data(), m::kNbInputs, io.data() + m::kNbInputs, 1) == 0);

    io[m::kHiddenIn].max = dims({512, H});
    size_t const ws = build_of(p)->getWorkspaceSize(io.data(), m::kNbInputs, io.data() + m::kNbInputs, 1);
    CHECK(ws >= size_t(512) * k * (H + I) * 4); // fp32 intermediates of every (token, expert) row

    // The workspace size of the build travels in the engine; a runtime launch needing more than
    // it is refused (GPE_ERR_WORKSPACE_TOO_SMALL), not run past the end of the buffer.
    io[m::kHiddenIn].max = dims({16, H});
    build_of(p)->getWorkspaceSize(io.data(), m::kNbInputs, io.data() + m::kNbInputs, 1);
    PluginFieldCollection const* ser_ws = runtime_of(p)->getFieldsToSerialize();
    CHECK(ser_ws && ser_ws->nbFields == m::kNbAttrs + 1);
    IPluginV3* r = c->createPlugin("moe", ser_ws, TensorRTPhase::kRUNTIME);
    CHECK(r != nullptr);
    if (r)
    {
        std::vector<Dims> runtime;
        for (auto const& d : io)
            runtime.push_back(d.desc.dims);
        runtime[m::kHiddenIn] = runtime[m::kNbInputs] = dims({17, H});
        runtime[m::kNewLenIn] = dims({1});
        CHECK(enqueue_with(r, io, m::kNbInputs, runtime) != 0);
        CHECK(logged("workspace"));
        runtime[m::kNewLenIn] = dims({2}); // 17 tokens are not whole rows of a batch of 2
        CHECK(enqueue_with(r, io, m::kNbInputs, runtime) != 0);
        CHECK(logged("bad shape"));
        delete r;
    }

    ConstBuilder b;
    DimsExprs in_exprs[m::kNbInputs]{}, out_exprs[1]{};
    in_exprs[m::kHiddenIn] = const_dims(b, {7, H});
    CHECK(build_of(p)->getOutputShapes(in_exprs, m::kNbInputs, nullptr, 0, out_exprs, 1, b) == 0);
    CHECK(out_exprs[0].nbDims == 2 && out_exprs[0].d[0]->getConstantValue() == 7
        && out_exprs[0].d[1]->getConstantValue() == H);
    delete q;
    delete p;
}

void test_gemm()
{
    namespace g = ops::gemm4bit;
    auto const A = [](int a) { return g::kAttrs[a].name; };
    IPluginCreatorV3One* c = creator(g::kOpType);
    Fields int4;
    int4.s(A(g::kFormatAttr), g::kFormatInt4).i(A(g::kInFeaturesAttr), 2880).i(A(g::kOutFeaturesAttr), 4096);
    IPluginV3* p = c->createPlugin("gemm", int4.get(), TensorRTPhase::kBUILD);
    CHECK(p != nullptr);
    if (!p)
        return;
    Fields bad;
    bad.s(A(g::kFormatAttr), "nf4").i(A(g::kInFeaturesAttr), 2880).i(A(g::kOutFeaturesAttr), 4096);
    CHECK(c->createPlugin("gemm", bad.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged("nf4"));
    Fields bad_k;
    bad_k.s(A(g::kFormatAttr), g::kFormatMxfp4).i(A(g::kInFeaturesAttr), 100).i(A(g::kOutFeaturesAttr), 8);
    CHECK(c->createPlugin("gemm", bad_k.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged(A(g::kInFeaturesAttr)));

    std::vector<DynamicPluginTensorDesc> io = {
        desc(dims({-1, -1, 2880}), DataType::kHALF),
        desc(dims({4096, 90, 16}), DataType::kUINT8),
        desc(dims({4096, 90}), DataType::kHALF), // int4: fp16 scales
        desc(dims({4096}), DataType::kFLOAT),
        desc(dims({-1, -1, 4096}), DataType::kHALF),
    };
    CHECK(accepts(p, io, 4));
    auto u8_scales = io;
    u8_scales[g::kWeightScalesIn].desc.type = DataType::kUINT8; // that is mxfp4's scale type
    CHECK(!accepts(p, u8_scales, 4));
    CHECK(build_of(p)->configurePlugin(io.data(), 4, io.data() + 4, 1) == 0);
    std::vector<DynamicPluginTensorDesc> no_bias = {io[0], io[1], io[2], io[4]};
    CHECK(accepts(p, no_bias, 3));
    CHECK(build_of(p)->configurePlugin(no_bias.data(), 3, no_bias.data() + 3, 1) == 0);
    auto wrong = io;
    wrong[g::kInputIn].desc.dims = dims({-1, -1, 2048});
    CHECK(build_of(p)->configurePlugin(wrong.data(), 4, wrong.data() + 4, 1) != 0);
    CHECK(logged(g::kInputs[g::kInputIn].name));
    ConstBuilder b;
    DimsExprs in_exprs[4]{}, out_exprs[1]{};
    in_exprs[g::kInputIn] = const_dims(b, {2, 5, 2880});
    CHECK(build_of(p)->getOutputShapes(in_exprs, 4, nullptr, 0, out_exprs, 1, b) == 0);
    CHECK(out_exprs[0].nbDims == 3 && out_exprs[0].d[1]->getConstantValue() == 5
        && out_exprs[0].d[2]->getConstantValue() == 4096);
    delete p;
}

void test_attention()
{
    namespace s = ops::sink_attention;
    auto const A = [](int a) { return s::kAttrs[a].name; };
    IPluginCreatorV3One* c = creator(s::kOpType);
    int const H = 64, KVH = 8, D = 64, W = 128;
    Fields f;
    f.i(A(s::kNumHeadsAttr), H).i(A(s::kNumKvHeadsAttr), KVH).i(A(s::kHeadDimAttr), D).i(A(s::kWindowAttr), W);
    f.f(A(s::kScaleAttr), 0.125f);
    IPluginV3* p = c->createPlugin("attn", f.get(), TensorRTPhase::kBUILD);
    CHECK(p != nullptr);
    if (!p)
        return;
    Fields no_scale;
    no_scale.i(A(s::kNumHeadsAttr), H).i(A(s::kNumKvHeadsAttr), KVH).i(A(s::kHeadDimAttr), D);
    CHECK(c->createPlugin("attn", no_scale.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged(A(s::kScaleAttr)));
    Fields odd_group;
    odd_group.i(A(s::kNumHeadsAttr), 12).i(A(s::kNumKvHeadsAttr), 8).i(A(s::kHeadDimAttr), D).f(A(s::kScaleAttr), 1.f);
    CHECK(c->createPlugin("attn", odd_group.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logged("num_heads=12"));

    CHECK(build_of(p)->getAliasedInput(s::kPresentKeyOut) == s::kPastKeyIn);
    CHECK(build_of(p)->getAliasedInput(s::kPresentValueOut) == s::kPastValueIn);
    CHECK(build_of(p)->getAliasedInput(s::kOutputOut) == -1);

    auto const T = DataType::kBF16;
    std::vector<DynamicPluginTensorDesc> io = {
        desc(dims({-1, -1, H * D}), T), desc(dims({-1, -1, KVH * D}), T), desc(dims({-1, -1, KVH * D}), T),
        desc(dims({H}), DataType::kFLOAT), desc(dims({4096, D / 2}), DataType::kFLOAT),
        desc(dims({4096, D / 2}), DataType::kFLOAT), desc(dims({-1, KVH, W, D}), T), desc(dims({-1, KVH, W, D}), T),
        desc(dims({-1}), DataType::kINT32), desc(dims({-1}), DataType::kINT32),
        desc(dims({-1, -1, H * D}), T), desc(dims({-1, KVH, W, D}), T), desc(dims({-1, KVH, W, D}), T),
    };
    CHECK(accepts(p, io, s::kNbInputs));
    auto int64_len = io;
    int64_len[s::kPastLenIn].desc.type = DataType::kINT64;
    CHECK(!accepts(p, int64_len, s::kNbInputs));
    CHECK(build_of(p)->configurePlugin(io.data(), s::kNbInputs, io.data() + s::kNbInputs, 3) == 0);
    auto small_ring = io;
    small_ring[s::kPastKeyIn].desc.dims = dims({-1, KVH, W / 2, D});
    small_ring[s::kPastValueIn].desc.dims = dims({-1, KVH, W / 2, D});
    CHECK(build_of(p)->configurePlugin(small_ring.data(), s::kNbInputs, small_ring.data() + s::kNbInputs, 3) != 0);
    CHECK(logged("ring cache capacity"));

    auto other_batch = io; // batch sizes that disagree are refused where known at build time
    other_batch[s::kQueryIn].desc.dims = dims({2, -1, H * D});
    other_batch[s::kNewLenIn].desc.dims = dims({3});
    CHECK(build_of(p)->configurePlugin(other_batch.data(), s::kNbInputs, other_batch.data() + s::kNbInputs, 3) != 0);
    CHECK(logged(s::kInputs[s::kNewLenIn].name));

    io[s::kQueryIn].max = dims({4, 512, H * D});
    CHECK(build_of(p)->getWorkspaceSize(io.data(), s::kNbInputs, io.data() + s::kNbInputs, 3)
        >= size_t(4) * 512 * KVH * D * 2); // rope'd new keys at least

    // runtime: onShapeChange refuses ports that disagree; enqueue refuses a launch needing more
    // workspace than the build recorded (B*S beyond the profile's max)
    IPluginV3* r = c->createPlugin("attn", runtime_of(p)->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    CHECK(r != nullptr);
    if (r)
    {
        auto const B = [&](int64_t b, int64_t S, int64_t b_len) {
            Dims const q = dims({b, S, H * D}), kv = dims({b, S, KVH * D}), cache = dims({b, KVH, W, D});
            return std::vector<Dims>{q, kv, kv, dims({H}), dims({4096, D / 2}), dims({4096, D / 2}), cache, cache,
                dims({b_len}), dims({b_len}), q, cache, cache};
        };
        CHECK(enqueue_with(r, io, s::kNbInputs, B(2, 3, 3)) != 0);
        CHECK(logged(s::kInputs[s::kPastLenIn].name));
        CHECK(enqueue_with(r, io, s::kNbInputs, B(8, 512, 8)) != 0);
        CHECK(logged("workspace"));
        delete r;
    }

    ConstBuilder b;
    DimsExprs in_exprs[s::kNbInputs]{}, out_exprs[3]{};
    in_exprs[s::kQueryIn] = const_dims(b, {2, 3, H * D});
    in_exprs[s::kPastKeyIn] = const_dims(b, {2, KVH, W, D});
    in_exprs[s::kPastValueIn] = const_dims(b, {2, KVH, W, D});
    CHECK(build_of(p)->getOutputShapes(in_exprs, s::kNbInputs, nullptr, 0, out_exprs, 3, b) == 0);
    CHECK(out_exprs[0].nbDims == 3 && out_exprs[0].d[2]->getConstantValue() == H * D);
    CHECK(out_exprs[1].nbDims == 4 && out_exprs[1].d[2]->getConstantValue() == W);
    CHECK(out_exprs[2].nbDims == 4 && out_exprs[2].d[1]->getConstantValue() == KVH);

    IPluginV3* clone = p->clone();
    CHECK(clone != nullptr && build_of(clone)->getAliasedInput(s::kPresentKeyOut) == s::kPastKeyIn);
    delete clone;
    delete p;
}
} // namespace

int main()
{
    setLoggerFinder(&g_finder);
    test_registry();
    test_moe();
    test_gemm();
    test_attention();
    std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "passed", g_failures);
    return g_failures ? 1 : 0;
}
