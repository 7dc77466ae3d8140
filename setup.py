"""Build of the native part: the CPU custom-op library for ONNX Runtime (cpu_kernels/).

Everything else about the distribution is in pyproject.toml. The library is a plain shared
object (no Python module init) that ONNX Runtime loads with register_custom_ops_library; it is
installed as gptoss_edge/libgptoss_edge_cpu.so. A C++17 compiler (g++ or clang++) is needed:
without one the build stops with a message saying so.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = sorted(str(p) for p in Path("cpu_kernels").glob("*.cpp"))
LIB_NAME = "libgptoss_edge_cpu"


class BuildCpuKernels(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        *package, _ = fullname.split(".")
        return str(Path(*package, LIB_NAME + (".dylib" if sys.platform == "darwin" else ".so")))

    def get_export_symbols(self, ext):      # not a Python module: no PyInit_ symbol
        return []

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:   # compiler missing or failing: one clear line, then stop
            cxx = (getattr(self.compiler, "compiler_cxx", None) or ["c++"])[0]
            hint = ("Install a C++17 compiler (Debian/Ubuntu: apt-get install g++) and retry."
                    if shutil.which(cxx) is None else
                    f"The compiler ({cxx}) ran: its messages above say what failed (C++17 is required).")
            raise SystemExit("gptoss-edge: building the CPU kernels (cpu_kernels/*.cpp) failed: "
                             f"{str(e).rstrip('.')}. {hint}") from None


setup(
    ext_modules=[Extension(
        "gptoss_edge._cpu_kernels", sources=SOURCES, language="c++",
        include_dirs=["cpu_kernels", "plugins/common"],     # opset_generated.h: the op set's names
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden", "-w"],
        depends=sorted(str(p) for p in Path("cpu_kernels").glob("*.h")) + ["plugins/common/opset_generated.h"],
    )],
    cmdclass={"build_ext": BuildCpuKernels},
)
