"""Building the C-ABI kernel library for gpu_check, standard library only (so a machine without
numpy can build, and the build can happen on another machine than the run): nvcc the kernel
sources into build_dir/libgptoss_edge_kernels.so with a copy of its libcudart beside it and a
build.json naming the arch, the toolkit and a digest of the sources (stale-library check)."""
from __future__ import annotations

import ctypes.util
import hashlib
import json
import os
import re
from pathlib import Path

LIB_NAME = "libgptoss_edge_kernels.so"


def find_cudart(cuda_home: Path | None) -> str:
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12"]
    dirs = [cuda_home / "lib64", cuda_home / "targets" / "x86_64-linux" / "lib",
            cuda_home / "targets" / "sbsa-linux" / "lib"] if cuda_home else []
    for d in dirs:
        for n in names:
            if (d / n).exists():
                return str(d / n)
    found = ctypes.util.find_library("cudart")
    if found:
        return found
    raise RuntimeError(f"libcudart not found (looked in {[str(d) for d in dirs]} and the loader path)")


def build_library(root: Path, out_dir: Path, nvcc: str, cudart_dir: str, arch: str = "native") -> Path:
    """nvcc the kernel sources (in parallel, one arch) into out_dir/libgptoss_edge_kernels.so,
    linked to the shared libcudart of cudart_dir (the one Cuda() loads: one runtime instance).
    A copy of that libcudart goes beside the library (found first through rpath $ORIGIN), so
    out_dir can be carried to a GPU machine without the toolkit. Objects stay in a temp dir."""
    import concurrent.futures
    import shutil
    import subprocess
    import tempfile

    sources = sorted((root / "plugins").glob("*/kernel.cu")) + [root / "plugins" / "common" / "gpe_status.cpp"]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_obj_") as tmp:
        def compile_one(src: Path) -> Path:
            obj = Path(tmp) / f"{src.parent.name}_{src.stem}.o"
            cmd = [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "-cudart", "shared",
                   "-Xcompiler", "-fPIC,-fvisibility=hidden", "-c", str(src), "-o", str(obj)]
            if src.suffix == ".cpp":
                cmd[1:1] = ["-x", "cu"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"nvcc failed on {src}:\n{proc.stdout}{proc.stderr}")
            return obj

        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            objs = list(pool.map(compile_one, sources))
        lib = out_dir / LIB_NAME
        proc = subprocess.run([nvcc, "-shared", f"-arch={arch}", "-cudart", "shared", "-o", str(lib), *map(str, objs),
                               f"-L{cudart_dir}", "-Xlinker", "-rpath,$ORIGIN", "-Xlinker", f"-rpath,{cudart_dir}"],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"link failed:\n{proc.stdout}{proc.stderr}")
    for so in sorted(Path(cudart_dir).glob("libcudart.so.*")):  # the SONAME file(s) the library needs
        if re.fullmatch(r"libcudart\.so\.\d+", so.name):
            shutil.copy2(so.resolve(), out_dir / so.name)
    return lib


def cudart_beside(lib: Path) -> str | None:
    """The libcudart copied next to a prebuilt library by build_library, if any."""
    found = sorted(p for p in lib.parent.glob("libcudart.so.*") if re.fullmatch(r"libcudart\.so\.\d+", p.name))
    return str(found[-1]) if found else None


def source_digest(root: Path) -> str:
    """sha256 over the sources the kernel library is built from."""
    h = hashlib.sha256()
    plugins = root / "plugins"
    for p in sorted(list(plugins.glob("*/kernel.*")) + list(plugins.glob("common/*.cuh"))
                    + list(plugins.glob("common/*.h")) + [plugins / "common" / "gpe_status.cpp"]):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def write_build_info(lib: Path, root: Path, arch: str, nvcc_version: str | None) -> None:
    info = {"arch": arch, "nvcc": nvcc_version, "sources_sha256": source_digest(root)}
    (lib.parent / "build.json").write_text(json.dumps(info, indent=1) + "\n")


def stale_reason(lib: Path, root: Path) -> str | None:
    """Why a prebuilt library does not match the sources here (None: it does)."""
    info_path = lib.parent / "build.json"
    if not info_path.exists():
        return f"{info_path} missing (not built by gpu_check --build-only)"
    info = json.loads(info_path.read_text())
    if info.get("sources_sha256") != source_digest(root):
        return "the kernel sources changed since it was built"
    return None
