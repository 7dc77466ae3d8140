"""Our CPU kernels without ONNX Runtime: tests/native/kernel_check.cpp checks every kernel of
every ISA table, and SinkAttention, against a float64 reference with the bounds of
tests/test_cpu_kernels*.py.
Built for this machine (the x86 paths it has), and cross-built for aarch64 and run under
qemu-user: the NEON / dot-product kernels a Jetson or Graviton runs, and the dispatch that falls
back to the portable kernels on a core without the dot-product instructions. qemu checks
correctness only; it says nothing about speed."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "cpu_kernels"
CHECK = ROOT / "tests" / "native" / "kernel_check.cpp"
ISA_SOURCES = [KERNELS / n for n in ("common.cpp", "isa_avx2.cpp", "isa_avx512.cpp", "isa_neon.cpp", "attention.cpp")]
CROSS = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"


def build(compiler: str, out: Path, *flags: str) -> Path:
    subprocess.run([compiler, "-std=c++17", "-O2", *flags, "-I", str(KERNELS), str(CHECK),
                    *map(str, ISA_SOURCES), "-o", str(out)], check=True, capture_output=True, text=True)
    return out


def run(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)


def test_every_isa_this_cpu_has_passes_the_native_check(tmp_path):
    exe = build(os.environ.get("CXX", "g++"), tmp_path / "kernel_check")
    r = run(exe)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("0 failed")
    assert "portable own quantizers give the portable bits" in " ".join(r.stdout.split())


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86 levels")
@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64"])
def test_attention_passes_at_the_x86_levels_this_cpu_does_not_select(tmp_path, level):
    # The library compiles attention once per level (target_clones) and the CPU picks one; each
    # level is built alone here (same source, that target) so AVX2 and baseline run too.
    exe = build(os.environ.get("CXX", "g++"), tmp_path / "kernel_check", "-DGEK_NO_CLONES", f"-march={level}")
    r = run(exe, "portable")
    assert r.returncode == 0, r.stdout + r.stderr
    attn = [line for line in r.stdout.splitlines() if line.startswith("attn ")]
    assert len(attn) == 8 and all(" ok (" in line for line in attn)


def test_native_check_refuses_an_isa_the_cpu_lacks(tmp_path):
    exe = build(os.environ.get("CXX", "g++"), tmp_path / "kernel_check")
    r = run(exe, "neon" if os.uname().machine == "x86_64" else "avx2")
    assert r.returncode == 2 and "not available on this CPU" in r.stdout


cross_tools = pytest.mark.skipif(shutil.which(CROSS) is None or shutil.which(QEMU) is None,
                                 reason="no aarch64 cross compiler or qemu-user (.ci/run installs both)")


@pytest.fixture(scope="module")
def aarch64_check(tmp_path_factory):
    return build(CROSS, tmp_path_factory.mktemp("aarch64") / "kernel_check", "-static")


@cross_tools
def test_neon_kernels_pass_under_qemu_on_a_dot_product_core(aarch64_check):
    r = run(QEMU, "-cpu", "max", aarch64_check)          # Armv8.2+ with the dot product
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("auto selects: neon")
    neon = [line for line in r.stdout.splitlines() if line.startswith("neon ")]
    assert len(neon) == 31 and all(" ok (" in line for line in neon)   # 5 shapes x 6 checks + quantizers
    attn = [line for line in r.stdout.splitlines() if line.startswith("attn ")]
    assert len(attn) == 8 and all(" ok (" in line for line in attn)  # vector extensions on NEON


@cross_tools
def test_a_core_without_the_dot_product_runs_the_portable_kernels(aarch64_check):
    r = run(QEMU, "-cpu", "cortex-a53", aarch64_check)    # Armv8.0: no SDOT
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("auto selects: portable")
    r = run(QEMU, "-cpu", "cortex-a53", aarch64_check, "neon")
    assert r.returncode == 2 and "neon: not available on this CPU" in r.stdout


@pytest.mark.skipif(shutil.which(CROSS) is None, reason="no aarch64 cross compiler")
def test_the_whole_library_compiles_for_aarch64_with_the_dot_product_path(tmp_path):
    for src in sorted(KERNELS.glob("*.cpp")):
        obj = tmp_path / (src.stem + ".o")
        subprocess.run([CROSS, "-std=c++17", "-O2", "-fPIC", "-c", str(src), "-o", str(obj),
                        "-I", str(KERNELS), "-I", str(ROOT / "plugins" / "common")],
                       check=True, capture_output=True)
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "isa_neon.o")], check=True,
                         capture_output=True, text=True).stdout
    assert "sdot" in dis          # the int8 paths use the Armv8.2 dot-product instruction
