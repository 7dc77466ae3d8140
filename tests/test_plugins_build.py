"""Tier 1 (CPU CI): the CUDA plugins compile for every target GPU, and the TensorRT glue compiles,
links (no libnvinfer needed) and passes its CPU self-test against real TensorRT headers.

* nvcc compiles each plugins/*/kernel.cu for sm_87, sm_89, sm_90, sm_120 (one nvcc per file, the
  files in parallel) and cuobjdump (the toolkit's, or the nvidia-cuda-cuobjdump wheel of the test
  extras) lists a cubin for exactly those archs in each object. Skipped if nvcc is absent; an arch
  the installed nvcc cannot target is reported as skipped, the others still compile.
* The glue (plugin.cpp files, plugin_utils.cpp, library.cpp) compiles with -Wall -Wextra -Werror
  against TensorRT headers found via $TensorRT_ROOT/include or the standard install paths,
  links with the kernel objects into libgptoss_edge_plugins.so with --no-undefined, and
  plugins/tests/glue_selftest.cpp drives it (no GPU: no kernel is launched). Skipped, saying so,
  when no TensorRT headers are found.
Cost on 2 CPU cores: about 1 minute (the compile times are printed).
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
TARGET_ARCHS = ("87", "89", "90", "120")
KERNEL_SOURCES = sorted(PLUGINS.glob("*/kernel.cu"))
GLUE_SOURCES = [PLUGINS / "common" / "plugin_utils.cpp", PLUGINS / "common" / "library.cpp",
                *sorted(PLUGINS.glob("*/plugin.cpp"))]
TRT_STANDARD_INCLUDES = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu",
                         "/usr/local/tensorrt/include", "/usr/include")


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if Path(p).exists()), None)


def cuda_dirs(nvcc: str) -> tuple[Path, Path]:
    """(include, lib) of the toolkit; nvcc may be a wrapper script, so try the usual homes too."""
    homes = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    homes += [Path(nvcc).resolve().parent.parent, Path("/usr/local/cuda")]
    home = next((h for h in homes if (h / "include" / "cuda_runtime_api.h").exists()), homes[-1])
    libdir = next((d for d in (home / "lib64", home / "targets" / "x86_64-linux" / "lib",
                               home / "targets" / "sbsa-linux" / "lib") if (d / "libcudart.so").exists()), home / "lib64")
    return home / "include", libdir


def find_trt_include() -> Path | None:
    candidates = []
    if os.environ.get("TensorRT_ROOT"):
        candidates.append(Path(os.environ["TensorRT_ROOT"]) / "include")
    candidates += [Path(p) for p in TRT_STANDARD_INCLUDES]
    return next((c for c in candidates if (c / "NvInferRuntime.h").exists()), None)


def trt_version(include: Path) -> str:
    text = (include / "NvInferVersion.h").read_text()
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        for key in (f"#define NV_TENSORRT_{part} ", f"#define TRT_{part}_ENTERPRISE "):
            line = next((ln for ln in text.splitlines() if ln.startswith(key)), None)
            if line and line.split()[2].isdigit():
                parts.append(line.split()[2])
                break
    return ".".join(parts)


def run(cmd: list[str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


@pytest.fixture(scope="session")
def nvcc() -> str:
    path = find_nvcc()
    if path is None:
        pytest.skip("nvcc not found: CUDA kernel compile checks skipped")
    return path


@pytest.fixture(scope="session")
def supported_archs(nvcc) -> list[str]:
    out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    listed = {a.split("_")[1] for a in out if a.startswith("compute_")}
    return [a for a in TARGET_ARCHS if a in listed]


@pytest.fixture(scope="session")
def kernel_objects(nvcc, supported_archs, tmp_path_factory) -> dict[Path, tuple[int, str, float, Path]]:
    """Compile every kernel.cu once for all supported archs (files in parallel)."""
    out_dir = tmp_path_factory.mktemp("kernels")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in supported_archs]

    def compile_one(src: Path):
        obj = out_dir / f"{src.parent.name}.o"
        cmd = [nvcc, "-std=c++17", "-O3", "--threads", "2", *gencode, "-Xcompiler", "-fPIC,-fvisibility=hidden",
               "-c", str(src), "-o", str(obj)]
        return src, (*run(cmd), obj)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(KERNEL_SOURCES)) as pool:
        results = dict(pool.map(compile_one, KERNEL_SOURCES))
    for src, (rc, _, secs, _) in results.items():
        print(f"nvcc {src.relative_to(ROOT)} sm_{',sm_'.join(supported_archs)}: {secs:.1f} s rc={rc}")
    return results


def test_every_plugin_folder_has_the_same_shape():
    folders = [d for d in PLUGINS.iterdir() if (d / "kernel.cu").exists()]
    assert {d.name for d in folders} == {"moe_mxfp4", "gemm_4bit", "sink_attention"}
    for d in folders:
        for name in ("kernel.cu", "kernel.h", "plugin.cpp", "plugin.h", "README.md"):
            assert (d / name).exists(), f"{d.relative_to(ROOT)}/{name} missing"


@pytest.mark.parametrize("arch", TARGET_ARCHS)
def test_nvcc_supports_target_arch(supported_archs, arch):
    if arch not in supported_archs:
        pytest.skip(f"this nvcc cannot target sm_{arch}: kernels compiled for the other archs only")


def find_cuobjdump(nvcc: str) -> str | None:
    """cuobjdump beside nvcc, on PATH, or from the nvidia-cuda-cuobjdump wheel (test extras)."""
    import importlib.util

    cands = [Path(nvcc).parent / "cuobjdump", Path(shutil.which("cuobjdump") or "/nonexistent")]
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        cands += sorted(Path(base).glob("*/bin/cuobjdump"))
    return next((str(c) for c in cands if c.is_file()), None)


@pytest.mark.parametrize("src", KERNEL_SOURCES, ids=lambda p: p.parent.name)
def test_kernel_compiles_for_all_archs(kernel_objects, supported_archs, src, nvcc):
    rc, log, secs, obj = kernel_objects[src]
    assert rc == 0, f"nvcc failed on {src.relative_to(ROOT)}:\n{log}"


@pytest.mark.parametrize("src", KERNEL_SOURCES, ids=lambda p: p.parent.name)
def test_kernel_objects_hold_sass_for_each_arch(kernel_objects, supported_archs, src, nvcc):
    """The object really carries machine code (cubin) for exactly the target archs."""
    cuobjdump = find_cuobjdump(nvcc)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump, part of the test extras)")
    rc, log, _, obj = kernel_objects[src]
    assert rc == 0, log
    proc = subprocess.run([cuobjdump, "--list-elf", str(obj)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    found = set(re.findall(r"\.sm_(\d+)a?\.cubin", proc.stdout))
    assert found == set(supported_archs), f"{obj.name}: cubins for sm_{sorted(found)}, expected {supported_archs}"


def test_launcher_headers_are_plain_c():
    """kernel.h files are the C ABI that ctypes loads: they must parse as C."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    for header in sorted(PLUGINS.glob("*/kernel.h")):
        rc, log, _ = run([cc, "-std=c11", "-fsyntax-only", "-x", "c", str(header)])
        assert rc == 0, f"{header.relative_to(ROOT)} is not valid C:\n{log}"


@pytest.fixture(scope="session")
def trt_include() -> Path:
    inc = find_trt_include()
    if inc is None:
        pytest.skip("TensorRT headers not found ($TensorRT_ROOT/include or /usr/include/<triplet>): "
                    "TensorRT glue compile-check SKIPPED")
    print(f"TensorRT {trt_version(inc)} headers at {inc}")
    return inc


def test_glue_compiles_links_and_passes_selftest(trt_include, kernel_objects, nvcc, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    cuda_inc, cuda_lib = cuda_dirs(nvcc)
    flags = ["-std=c++17", "-O1", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
             "-isystem", str(trt_include), "-isystem", str(cuda_inc)]
    sources = GLUE_SOURCES + [PLUGINS / "common" / "gpe_status.cpp"]

    def compile_one(src: Path):
        obj = tmp_path / f"{src.parent.name}_{src.stem}.o"
        return obj, run([cxx, *flags, "-c", str(src), "-o", str(obj)])

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        compiled = list(pool.map(compile_one, sources))
    for obj, (rc, log, _) in compiled:
        assert rc == 0, f"glue compile failed ({obj.name}) against TensorRT {trt_version(trt_include)}:\n{log}"
    kernels = []
    for src, (rc, log, _, obj) in kernel_objects.items():
        assert rc == 0, f"kernel object {src} failed to compile:\n{log}"
        kernels.append(str(obj))
    lib = tmp_path / "libgptoss_edge_plugins.so"
    rc, log, _ = run([cxx, "-shared", "-o", str(lib), *[str(o) for o, _ in compiled], *kernels,
                      f"-L{cuda_lib}", "-lcudart", "-Wl,--no-undefined"])
    assert rc == 0, f"plugin library link failed:\n{log}"
    exports = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    for sym in ("getCreators", "setLoggerFinder", "gpe_moe_mxfp4", "gpe_gemm_4bit", "gpe_sink_attention"):
        assert f" {sym}\n" in exports, f"{lib.name} does not export {sym}"
    exe = tmp_path / "glue_selftest"
    rc, log, _ = run([cxx, *flags, str(PLUGINS / "tests" / "glue_selftest.cpp"), "-o", str(exe),
                      f"-L{tmp_path}", "-lgptoss_edge_plugins", f"-Wl,-rpath,{tmp_path}:{cuda_lib}"])
    assert rc == 0, f"glue self-test build failed:\n{log}"
    print(f"glue compile+link+selftest build: {time.perf_counter() - t0:.1f} s (TensorRT {trt_version(trt_include)})")
    proc = subprocess.run([str(exe)], capture_output=True, text=True,
                          env={**os.environ, "LD_LIBRARY_PATH": f"{tmp_path}:{cuda_lib}"})
    assert proc.returncode == 0, f"glue self-test failed:\n{proc.stdout}{proc.stderr}"
