"""The CUDA runtime through ctypes: the one way gptoss-edge reaches device memory, streams and
CUDA graphs (TensorRT backend, build-engine, selftest).

Why ctypes on libcudart rather than NVIDIA's `cuda-bindings` (cuda-python): the images we deploy
(NVIDIA's TensorRT container, JetPack's l4t-jetpack) already carry the libcudart that TensorRT
itself links, so this adds no dependency and cannot disagree with TensorRT about the CUDA
version; cuda-bindings wheels are per CUDA major (12.x vs 13.x) and would be one more thing to
match to JetPack 6's CUDA 12.6. The calls used here have kept their C signatures from CUDA 11.4
to 13 (`cudaGraphInstantiateWithFlags` rather than `cudaGraphInstantiate`, whose signature
changed in 12.0). plugins/gpucheck/cuda_rt.py is the GPU-check script's own wrapper: it runs
from a bare source tree without this package.

Every call is checked: a failure raises CudaError with the call and CUDA's error name and text,
on one line. Nothing here needs a GPU to import; constructing CudaRuntime needs libcudart.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
from pathlib import Path

c_int, c_uint, c_size_t, c_void_p, c_ull = ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_ulonglong
_PP = ctypes.POINTER(c_void_p)

H2D, D2H, D2D = 1, 2, 3                 # cudaMemcpyKind
STREAM_NON_BLOCKING = 1                 # cudaStreamNonBlocking
CAPTURE_THREAD_LOCAL = 1                # cudaStreamCaptureModeThreadLocal
ATTR_INTEGRATED, ATTR_CC_MAJOR, ATTR_CC_MINOR = 18, 75, 76   # cudaDeviceAttr

# name -> argtypes (all return cudaError_t)
_SIGNATURES = {
    "cudaGetDeviceCount": [ctypes.POINTER(c_int)], "cudaSetDevice": [c_int],
    "cudaRuntimeGetVersion": [ctypes.POINTER(c_int)], "cudaDriverGetVersion": [ctypes.POINTER(c_int)],
    "cudaDeviceGetAttribute": [ctypes.POINTER(c_int), c_int, c_int],
    "cudaGetDeviceProperties": [c_void_p, c_int],
    "cudaMemGetInfo": [ctypes.POINTER(c_size_t), ctypes.POINTER(c_size_t)],
    "cudaMalloc": [_PP, c_size_t], "cudaFree": [c_void_p],
    "cudaHostAlloc": [_PP, c_size_t, c_uint], "cudaFreeHost": [c_void_p],
    "cudaMemcpyAsync": [c_void_p, c_void_p, c_size_t, c_int, c_void_p],
    "cudaMemsetAsync": [c_void_p, c_int, c_size_t, c_void_p],
    "cudaStreamCreateWithFlags": [_PP, c_uint], "cudaStreamDestroy": [c_void_p],
    "cudaStreamSynchronize": [c_void_p],
    "cudaStreamBeginCapture": [c_void_p, c_int], "cudaStreamEndCapture": [c_void_p, _PP],
    "cudaGraphInstantiateWithFlags": [_PP, c_void_p, c_ull], "cudaGraphLaunch": [c_void_p, c_void_p],
    "cudaGraphExecDestroy": [c_void_p], "cudaGraphDestroy": [c_void_p],
    "cudaGetLastError": [],
}


class CudaError(RuntimeError):
    """A failed CUDA runtime call; the message names the call and CUDA's error."""


def find_libcudart() -> str:
    """libcudart: $GPTOSS_EDGE_CUDART, the loader path, then $CUDA_HOME / /usr/local/cuda."""
    env = os.environ.get("GPTOSS_EDGE_CUDART")
    if env:
        return env
    found = ctypes.util.find_library("cudart")
    if found:
        return found
    homes = [Path(p) for p in (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if p]
    for home in homes:
        for sub in ("lib64", "lib", "targets/aarch64-linux/lib", "targets/x86_64-linux/lib"):
            for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
                if (home / sub / name).exists():
                    return str(home / sub / name)
    raise CudaError("libcudart not found (install the CUDA runtime, or set GPTOSS_EDGE_CUDART=/path/libcudart.so)")


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    name: str
    compute_capability: str        # "8.7"
    integrated: bool               # Jetson: GPU and CPU share the same DRAM
    total_bytes: int
    free_bytes: int


class CudaRuntime:
    def __init__(self, path: str | None = None, device: int = 0):
        path = path or find_libcudart()
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as e:
            raise CudaError(f"cannot load {path}: {e}") from None
        self.lib.cudaGetErrorName.restype = ctypes.c_char_p
        self.lib.cudaGetErrorName.argtypes = [c_int]
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.lib.cudaGetErrorString.argtypes = [c_int]
        for name, args in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = c_int, args
        self.path = path
        self.device = device

    def call(self, name: str, *args) -> None:
        rc = getattr(self.lib, name)(*args)
        if rc != 0:
            raise CudaError(f"{name} failed: {self.lib.cudaGetErrorName(rc).decode()} "
                            f"({self.lib.cudaGetErrorString(rc).decode()})")

    # ---- facts -----------------------------------------------------------------------------
    def runtime_version(self) -> str:
        v = c_int()
        self.call("cudaRuntimeGetVersion", ctypes.byref(v))
        return _version(v.value)

    def driver_version(self) -> str:
        """CUDA version the driver supports ("0.0": no driver)."""
        v = c_int()
        self.call("cudaDriverGetVersion", ctypes.byref(v))
        return _version(v.value)

    def device_count(self) -> int:
        n = c_int()
        self.call("cudaGetDeviceCount", ctypes.byref(n))
        return n.value

    def attribute(self, attr: int) -> int:
        v = c_int()
        self.call("cudaDeviceGetAttribute", ctypes.byref(v), attr, self.device)
        return v.value

    def device_facts(self) -> DeviceFacts:
        self.call("cudaSetDevice", self.device)
        props = ctypes.create_string_buffer(8192)          # cudaDeviceProp; `name` (char[256]) comes first
        self.call("cudaGetDeviceProperties", props, self.device)
        free, total = c_size_t(), c_size_t()
        self.call("cudaMemGetInfo", ctypes.byref(free), ctypes.byref(total))
        return DeviceFacts(name=props.raw[:256].split(b"\0", 1)[0].decode(errors="replace"),
                           compute_capability=f"{self.attribute(ATTR_CC_MAJOR)}.{self.attribute(ATTR_CC_MINOR)}",
                           integrated=bool(self.attribute(ATTR_INTEGRATED)),
                           total_bytes=total.value, free_bytes=free.value)

    # ---- memory and streams ----------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        p = c_void_p()
        self.call("cudaMalloc", ctypes.byref(p), max(int(nbytes), 1))
        return p.value

    def free(self, ptr: int) -> None:
        if ptr:
            self.call("cudaFree", c_void_p(ptr))

    def host_alloc(self, nbytes: int) -> int:
        """Pinned (page-locked) host memory: async copies to/from it do not stage."""
        p = c_void_p()
        self.call("cudaHostAlloc", ctypes.byref(p), max(int(nbytes), 1), 0)
        return p.value

    def free_host(self, ptr: int) -> None:
        if ptr:
            self.call("cudaFreeHost", c_void_p(ptr))

    def copy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.call("cudaMemcpyAsync", c_void_p(dst), c_void_p(src), nbytes, kind, c_void_p(stream))

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        self.call("cudaMemsetAsync", c_void_p(ptr), value, nbytes, c_void_p(stream))

    def stream_create(self) -> int:
        s = c_void_p()
        self.call("cudaStreamCreateWithFlags", ctypes.byref(s), STREAM_NON_BLOCKING)
        return s.value

    def stream_destroy(self, stream: int) -> None:
        if stream:
            self.call("cudaStreamDestroy", c_void_p(stream))

    def synchronize(self, stream: int) -> None:
        self.call("cudaStreamSynchronize", c_void_p(stream))

    # ---- CUDA graphs -----------------------------------------------------------------------
    def begin_capture(self, stream: int) -> None:
        self.call("cudaStreamBeginCapture", c_void_p(stream), CAPTURE_THREAD_LOCAL)

    def end_capture(self, stream: int) -> int:
        """Ends the capture and instantiates it; returns the executable graph."""
        graph, exe = c_void_p(), c_void_p()
        self.call("cudaStreamEndCapture", c_void_p(stream), ctypes.byref(graph))
        try:
            self.call("cudaGraphInstantiateWithFlags", ctypes.byref(exe), graph, 0)
        finally:
            self.call("cudaGraphDestroy", graph)
        return exe.value

    def graph_launch(self, exe: int, stream: int) -> None:
        self.call("cudaGraphLaunch", c_void_p(exe), c_void_p(stream))

    def graph_destroy(self, exe: int) -> None:
        if exe:
            self.call("cudaGraphExecDestroy", c_void_p(exe))


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"
