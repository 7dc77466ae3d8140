// The plugin library's two C entry points, as TensorRT's plugin registry expects of a shared
// library given to IPluginRegistry::loadLibrary / trtexec --dynamicPlugins.
#include "../gemm_4bit/plugin.h"
#include "../moe_mxfp4/plugin.h"
#include "../sink_attention/plugin.h"

namespace
{
struct Creators
{
    gpe::MoeCreator moe;
    gpe::Gemm4bitCreator gemm;
    gpe::SinkAttentionCreator attention;
    nvinfer1::IPluginCreatorInterface* list[3] = {&moe, &gemm, &attention};
};
} // namespace

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gpe::set_logger_finder(finder);
}

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) noexcept
{
    nbCreators = 0;
    Creators* creators = gpe::guarded<Creators*>("getCreators", nullptr, [] {
        static Creators instance; // built on first call; an allocation failure is logged, not thrown
        return &instance;
    });
    if (!creators)
        return nullptr;
    nbCreators = static_cast<int32_t>(sizeof(creators->list) / sizeof(creators->list[0]));
    return creators->list;
}
