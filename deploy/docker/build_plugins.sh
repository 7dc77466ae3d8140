#!/bin/sh
# Build plugins/ (CUDA kernels + TensorRT IPluginV3 glue) with CMake inside an NVIDIA image and
# install both libraries into $2. Fails when TensorRT headers were not found, since the image
# exists to carry the TensorRT plugin library.
#   build_plugins.sh SRC_DIR PREFIX_LIB_DIR CUDA_ARCHS      e.g. /src/plugins /opt/gptoss-edge/lib "89;90;120"
set -eu
src=$1 libdir=$2 archs=$3
build=$(mktemp -d)
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=$archs"
cmake --build "$build" --parallel "$(nproc)"
for lib in libgptoss_edge_kernels.so libgptoss_edge_plugins.so; do
  if [ ! -f "$build/$lib" ]; then
    echo "build_plugins.sh: $lib was not built (TensorRT headers missing? set TensorRT_ROOT)" >&2
    exit 1
  fi
done
install -d "$libdir"
install -m 0644 "$build/libgptoss_edge_kernels.so" "$build/libgptoss_edge_plugins.so" "$libdir/"
rm -rf "$build"
