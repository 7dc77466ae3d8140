"""ctypes bindings: a minimal libcudart (memory, copies, events, attributes) and the kernel
library's C ABI (plugins/*/kernel.h). Every CUDA call is checked; errors name the call."""
from __future__ import annotations

import ctypes

import numpy as np

c_int, c_size_t, c_void_p, c_float, c_int64 = ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64

H2D, D2H, D2D = 1, 2, 3
ATTR_SM_COUNT, ATTR_L2_BYTES = 16, 38  # cudaDevAttrMultiProcessorCount, cudaDevAttrL2CacheSize

# C ABI of the launchers: name -> (restype, argtypes), in the order of plugins/*/kernel.h.
# tests/test_gpu_check.py checks this table against the headers (count and kind of each param).
_P = c_void_p
KERNEL_ABI: dict[str, tuple[object, list[object]]] = {
    "gpe_status_string": (ctypes.c_char_p, [c_int]),
    "gpe_moe_mxfp4_workspace_size": (c_size_t, [c_int, c_int, c_int, c_int, c_int]),
    "gpe_moe_mxfp4": (c_int, [c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_float, c_float, c_float,
                              _P, c_int, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, c_size_t, _P]),
    "gpe_gemm_4bit": (c_int, [c_int, c_int, c_int, c_int64, c_int, c_int, _P, _P, _P, _P, _P, _P]),
    "gpe_sink_attention_workspace_size": (c_size_t, [c_int, c_int, c_int, c_int, c_int, c_int]),
    "gpe_sink_attention": (c_int, [c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_float, c_int, c_int,
                                   _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, c_size_t, _P]),
}
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}  # GpeDtype
FORMAT_CODES = {"mxfp4": 0, "int4": 1}                      # GpeW4Format
PATH_CODES = {"auto": 0, "gemv": 1, "tiled": 2, "mma": 3}   # GpePath


class Cuda:
    """The few runtime calls the checks need. Memory is tracked and freed by free_all()."""

    def __init__(self, cudart_path: str):
        self.lib = ctypes.CDLL(cudart_path, mode=ctypes.RTLD_GLOBAL)
        L = self.lib
        L.cudaGetErrorString.restype = ctypes.c_char_p
        L.cudaGetErrorString.argtypes = [c_int]
        for name, args in {
            "cudaMalloc": [ctypes.POINTER(c_void_p), c_size_t], "cudaFree": [c_void_p],
            "cudaMemcpy": [c_void_p, c_void_p, c_size_t, c_int], "cudaMemset": [c_void_p, c_int, c_size_t],
            "cudaMemsetAsync": [c_void_p, c_int, c_size_t, c_void_p],
            "cudaMemcpyAsync": [c_void_p, c_void_p, c_size_t, c_int, c_void_p],
            "cudaDeviceSynchronize": [], "cudaGetLastError": [], "cudaSetDevice": [c_int],
            "cudaEventCreate": [ctypes.POINTER(c_void_p)], "cudaEventDestroy": [c_void_p],
            "cudaEventRecord": [c_void_p, c_void_p], "cudaEventSynchronize": [c_void_p],
            "cudaEventElapsedTime": [ctypes.POINTER(c_float), c_void_p, c_void_p],
            "cudaDeviceGetAttribute": [ctypes.POINTER(c_int), c_int, c_int],
            "cudaRuntimeGetVersion": [ctypes.POINTER(c_int)], "cudaDriverGetVersion": [ctypes.POINTER(c_int)],
            "cudaMemGetInfo": [ctypes.POINTER(c_size_t), ctypes.POINTER(c_size_t)],
        }.items():
            fn = getattr(L, name)
            fn.restype, fn.argtypes = c_int, args
        self.allocations: list[int] = []
        self.check(L.cudaSetDevice(0), "cudaSetDevice(0)")

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what} failed: CUDA error {rc} ({self.lib.cudaGetErrorString(rc).decode()})")

    def malloc(self, nbytes: int) -> int:
        p = c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(p), max(int(nbytes), 1)), f"cudaMalloc({nbytes})")
        self.allocations.append(p.value)
        return p.value

    def free(self, ptr: int) -> None:
        self.allocations.remove(ptr)
        self.check(self.lib.cudaFree(c_void_p(ptr)), "cudaFree")

    def free_all(self) -> None:
        for p in list(self.allocations):
            self.free(p)

    def to_device(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        p = self.malloc(a.nbytes)
        self.check(self.lib.cudaMemcpy(c_void_p(p), a.ctypes.data_as(c_void_p), a.nbytes, H2D), "cudaMemcpy H2D")
        return p

    def upload(self, ptr: int, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a)
        self.check(self.lib.cudaMemcpy(c_void_p(ptr), a.ctypes.data_as(c_void_p), a.nbytes, H2D), "cudaMemcpy H2D")

    def to_host(self, ptr: int, shape, dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        self.sync("before D2H copy")
        self.check(self.lib.cudaMemcpy(out.ctypes.data_as(c_void_p), c_void_p(ptr), out.nbytes, D2H), "cudaMemcpy D2H")
        return out

    def poison(self, ptr: int, nbytes: int) -> None:
        """0xFF bytes: NaN in fp32/fp16/bf16, so any element a kernel forgets to write shows."""
        self.check(self.lib.cudaMemset(c_void_p(ptr), 0xFF, nbytes), "cudaMemset")

    def sync(self, what: str = "kernel") -> None:
        self.check(self.lib.cudaDeviceSynchronize(), f"cudaDeviceSynchronize ({what})")
        self.check(self.lib.cudaGetLastError(), f"cudaGetLastError ({what})")

    def context_error(self) -> str | None:
        """Text of a sticky error (a kernel fault leaves the context unusable), else None."""
        rc = self.lib.cudaDeviceSynchronize()
        return None if rc == 0 else f"CUDA error {rc} ({self.lib.cudaGetErrorString(rc).decode()})"

    def attribute(self, attr: int) -> int:
        v = c_int()
        self.check(self.lib.cudaDeviceGetAttribute(ctypes.byref(v), attr, 0), f"cudaDeviceGetAttribute({attr})")
        return v.value

    def versions(self) -> dict[str, int]:
        rt, drv = c_int(), c_int()
        self.check(self.lib.cudaRuntimeGetVersion(ctypes.byref(rt)), "cudaRuntimeGetVersion")
        self.check(self.lib.cudaDriverGetVersion(ctypes.byref(drv)), "cudaDriverGetVersion")
        return {"runtime": rt.value, "driver": drv.value}

    def free_memory(self) -> int:
        free, total = c_size_t(), c_size_t()
        self.check(self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return free.value

    def time_ms(self, fn, iters: int, flush: tuple[int, int] | None = None) -> float:
        """Mean milliseconds per fn() call over `iters` calls (events around each call; with
        flush=(ptr, nbytes) the L2 cache is overwritten before every call, outside the timing)."""
        start, end = c_void_p(), c_void_p()
        self.check(self.lib.cudaEventCreate(ctypes.byref(start)), "cudaEventCreate")
        self.check(self.lib.cudaEventCreate(ctypes.byref(end)), "cudaEventCreate")
        total = 0.0
        try:
            for _ in range(iters):
                if flush:
                    self.check(self.lib.cudaMemsetAsync(c_void_p(flush[0]), 0, flush[1], None), "flush L2")
                self.check(self.lib.cudaEventRecord(start, None), "cudaEventRecord")
                fn()
                self.check(self.lib.cudaEventRecord(end, None), "cudaEventRecord")
                self.check(self.lib.cudaEventSynchronize(end), "cudaEventSynchronize")
                ms = c_float()
                self.check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), start, end), "cudaEventElapsedTime")
                total += ms.value
        finally:
            self.lib.cudaEventDestroy(start)
            self.lib.cudaEventDestroy(end)
        return total / iters

    def copy_d2d(self, dst: int, src: int, nbytes: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(c_void_p(dst), c_void_p(src), nbytes, D2D, None), "cudaMemcpyAsync D2D")


class Kernels:
    """The C-ABI library; calls raise with gpe_status_string's text on a non-zero status."""

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        for name, (restype, argtypes) in KERNEL_ABI.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = restype, argtypes

    def call(self, name: str, *args) -> None:
        rc = getattr(self.lib, name)(*args)
        if rc != 0:
            raise RuntimeError(f"{name} returned {rc}: {self.lib.gpe_status_string(rc).decode()}")

    def size(self, name: str, *args) -> int:
        return int(getattr(self.lib, name)(*args))
