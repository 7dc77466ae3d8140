"""What the GPU machine has, probed with the standard library only (so it can be reported before
numpy is imported, and on a machine without it): python, numpy, nvcc, the CUDA driver and the
GPU (libcuda through ctypes), the CUDA runtime gpu_check would load, TensorRT's library and
python module. Each probe answers a value or None plus why; none raises."""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys

NEEDS = ("python3 + numpy; a CUDA GPU and its driver; nvcc (CUDA >= 12.6) or a prebuilt "
         "--lib (built with --build-only, carried with its libcudart)")


def _version(code: int) -> str:
    """CUDA's 1000*major + 10*minor encoding -> 'major.minor'."""
    return f"{code // 1000}.{code % 1000 // 10}"


def numpy_version() -> str | None:
    if importlib.util.find_spec("numpy") is None:
        return None
    try:
        return importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def nvcc_info(nvcc: str | None) -> str | None:
    if not nvcc:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{nvcc} (unusable: {e})"
    m = re.search(r"release (\d+\.\d+)", out)
    return f"{m.group(1) if m else 'unknown version'} ({nvcc})"


def driver_and_gpu() -> dict:
    """{'driver': 'CUDA 13.0 (580.xx)' | None, 'gpu': 'name, sm_90, 79 GiB' | None, 'why': ...}."""
    try:
        cu = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return {"driver": None, "gpu": None, "why": f"libcuda.so.1 not loadable ({e})"}
    c_int = ctypes.c_int
    rc = cu.cuInit(0)
    ver = c_int()
    cu.cuDriverGetVersion(ctypes.byref(ver))
    info = {"driver": f"CUDA {_version(ver.value)}" + _smi_driver(), "driver_cuda": ver.value, "gpu": None,
            "why": None}
    if rc != 0:
        info["why"] = f"cuInit failed with CUresult {rc}"
        return info
    dev, count = c_int(), c_int()
    cu.cuDeviceGetCount(ctypes.byref(count))
    if count.value < 1 or cu.cuDeviceGet(ctypes.byref(dev), 0) != 0:
        info["why"] = "no CUDA device visible"
        return info
    name = ctypes.create_string_buffer(256)
    cu.cuDeviceGetName(name, 256, dev)
    major, minor, mem = c_int(), c_int(), ctypes.c_size_t()
    cu.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cu.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    cu.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
    info["gpu"] = f"{name.value.decode()}, sm_{major.value}{minor.value}, {mem.value / 2**30:.0f} GiB"
    info["sm"] = f"sm_{major.value}{minor.value}"
    return info


def _smi_driver() -> str:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return f", driver {out[0]}" if out else ""


def cudart_version(path: str | None) -> int | None:
    """cudaRuntimeGetVersion of the libcudart at path (1000*major + 10*minor), None if unloadable."""
    if not path:
        return None
    try:
        rt = ctypes.CDLL(path)
    except OSError:
        return None
    v = ctypes.c_int()
    rt.cudaRuntimeGetVersion(ctypes.byref(v))
    return v.value


def cudart_info(path: str | None) -> str | None:
    if not path:
        return None
    v = cudart_version(path)
    return f"{path} (not loadable)" if v is None else f"{_version(v)} ({path})"


def driver_too_old(env: dict) -> str | None:
    """Why the runtime cannot run on this driver (a CUDA major newer than the driver's), else None."""
    drv, rt = env.get("driver_cuda"), env.get("cudart_version")
    if drv and rt and rt // 1000 > drv // 1000:
        return (f"the driver supports CUDA {_version(drv)}, the library's runtime is CUDA {_version(rt)}: build "
                f"the library with a CUDA {drv // 1000}.x toolkit (or nvcc on this machine)")
    return None


def tensorrt_libs() -> str | None:
    name = ctypes.util.find_library("nvinfer")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        v = lib.getInferLibVersion()
    except (OSError, AttributeError) as e:
        return f"{name} (unusable: {e})"
    return f"{v // 10000}.{v // 100 % 100}.{v % 100} ({name})"  # TensorRT >= 10: major*10000 + minor*100 + patch


def tensorrt_python() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed, version unknown"


def probe(nvcc: str | None, cudart: str | None) -> dict:
    dg = driver_and_gpu()
    return {"python": sys.version.split()[0], "numpy": numpy_version(), "nvcc": nvcc_info(nvcc),
            "driver": dg["driver"], "driver_cuda": dg.get("driver_cuda"), "gpu": dg["gpu"], "gpu_sm": dg.get("sm"),
            "gpu_why": dg["why"], "cudart": cudart_info(cudart), "cudart_version": cudart_version(cudart),
            "tensorrt_libs": tensorrt_libs(), "tensorrt_python": tensorrt_python()}


def summary(env: dict) -> str:
    """The one line gpu_check prints first: what it needs and what it found."""
    def show(key: str, missing: str = "MISSING") -> str:
        return env[key] if env[key] else missing
    gpu = env["gpu"] or f"MISSING ({env['gpu_why']})"
    return (f"needs {NEEDS} | found: python {env['python']}, numpy {show('numpy')}, nvcc {show('nvcc', 'none')}, "
            f"driver {show('driver')}, GPU {gpu}, cudart {show('cudart')}, TensorRT libs "
            f"{show('tensorrt_libs', 'none')}, TensorRT python {show('tensorrt_python', 'none')}")

