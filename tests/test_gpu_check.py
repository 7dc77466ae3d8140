"""CPU checks of the tier-2 GPU script (plugins/gpu_check.py), so that it works the first time a
GPU is available: its ctypes signatures match the C headers, its build step produces a library
whose host-side paths (argument validation, workspace sizes, status strings) answer correctly
through ctypes, its fallback numpy formulas agree with the project's reference kernels, its bf16
conversion matches torch, and its cases respect the op contract. Nothing here runs a kernel."""
from __future__ import annotations

import ctypes
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins"))

from gpucheck import build, cases, cuda_rt, data, fallback_ref  # noqa: E402

from gptoss_edge.compiler import opset, reference_kernels  # noqa: E402

C_TYPES = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "size_t": ctypes.c_size_t, "float": ctypes.c_float}


def header_prototypes() -> dict[str, tuple[str, list[str]]]:
    protos = {}
    for header in [*sorted((ROOT / "plugins").glob("*/kernel.h")), ROOT / "plugins" / "common" / "gpe_api.h"]:
        text = re.sub(r"//[^\n]*", "", header.read_text())
        for ret, name, params in re.findall(r"GPE_API\s+([\w\s\*]+?)\s*(\w+)\s*\(([^)]*)\)\s*;", text):
            protos[name] = (ret.strip(), [" ".join(p.split()) for p in params.split(",")])
    return protos


def ctype_of(decl: str):
    if "*" in decl:
        return ctypes.c_void_p
    return C_TYPES[decl.rsplit(" ", 1)[0]]


def test_ctypes_signatures_match_the_headers():
    protos = header_prototypes()
    assert set(protos) == set(cuda_rt.KERNEL_ABI), "gpucheck/cuda_rt.py KERNEL_ABI and the headers list different functions"
    for name, (ret, params) in protos.items():
        restype, argtypes = cuda_rt.KERNEL_ABI[name]
        expected_ret = ctypes.c_char_p if ret == "const char*" else C_TYPES[ret]
        assert restype is expected_ret, f"{name}: return type {ret}"
        assert len(argtypes) == len(params), f"{name}: {len(params)} params in the header, {len(argtypes)} in ctypes"
        for i, (decl, got) in enumerate(zip(params, argtypes)):
            assert got is ctype_of(decl), f"{name} param {i} '{decl}': ctypes has {got.__name__}"


def test_enum_codes_match_the_header():
    text = (ROOT / "plugins" / "common" / "gpe_api.h").read_text()
    for table, prefix in ((cuda_rt.DTYPE_CODES, "GPE_DTYPE_"), (cuda_rt.FORMAT_CODES, "GPE_W4_"),
                          (cuda_rt.PATH_CODES, "GPE_PATH_")):
        for name, code in table.items():
            assert re.search(rf"{prefix}{name.upper()} = {code}\b", text), f"{prefix}{name.upper()} != {code}"


def test_swiglu_constants_are_the_opset_defaults():
    spec = opset.MOE_MXFP4
    assert data.SWIGLU == tuple(spec.attr(n).default for n in ("swiglu_limit", "swiglu_alpha", "swiglu_linear_offset"))


def test_bf16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 100
    x[:4] = [0.0, -0.0, 1e-40, 3.0e38]
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(data.bf16_bits(x), want)
    assert np.array_equal(data.bf16_to_f32(want), torch.from_numpy(want.view(np.int16)).view(torch.bfloat16).float().numpy())


def test_compare_flags_nan_and_tolerates_rounding():
    ref = np.linspace(-3, 3, 101)
    got = data.round_to(ref, "bfloat16")
    assert data.compare(got, ref, "bfloat16", 4.0, 0.0)["ok"]  # one bf16 rounding
    got[7] = np.nan
    res = data.compare(got, ref, "bfloat16", 4.0, 2e-4)
    assert not res["ok"] and res["n_nan"] == 1


def test_fallback_formulas_agree_with_the_reference_kernels():
    """gpu_check falls back to these when the project's reference cannot be imported."""
    r = np.random.default_rng(3)
    E, k, H, I, T = 5, 2, 64, 96, 7
    gub, gus = data.mxfp4_weights(r, (E, 2 * I), H)
    dnb, dns = data.mxfp4_weights(r, (E, H), I)
    w = [(r.standard_normal((E, H)) / 8).astype(np.float32), r.standard_normal(E).astype(np.float32) * .1, gub, gus,
         r.standard_normal((E, 2 * I)).astype(np.float32) * .1, dnb, dns, r.standard_normal((E, H)).astype(np.float32)]
    x = r.standard_normal((T, H)).astype(np.float32)
    kw = dict(num_experts=E, top_k=k, hidden_size=H, intermediate_size=I, swiglu_limit=7.0, swiglu_alpha=1.702,
              swiglu_linear_offset=1.0)
    # float32 in, float32 out for the reference; 1e-5 relative covers its final float32 cast
    np.testing.assert_allclose(fallback_ref.moe_mxfp4(x, *w, **kw), reference_kernels.moe_mxfp4(x, *w, **kw),
                               rtol=1e-5, atol=1e-5)
    x14 = r.standard_normal((14, H)).astype(np.float32)   # 2 rows of 7: 7 and 3 real tokens
    new_len = np.array([7, 3], np.int32)
    padded = fallback_ref.moe_mxfp4(x14, *w, new_len, **kw)
    np.testing.assert_allclose(padded, reference_kernels.moe_mxfp4(x14, *w, new_len, **kw), rtol=1e-5, atol=1e-5)
    assert (padded[10:] == 0).all() and (padded[:10] != 0).any()
    for fmt in ("mxfp4", "int4"):
        blocks, scales = data.mxfp4_weights(r, (9,), 64) if fmt == "mxfp4" else data.int4_weights(r, 9, 64)
        bias = r.standard_normal(9).astype(np.float32)
        np.testing.assert_allclose(
            fallback_ref.gemm_4bit(x[:, :64], blocks, scales, bias, format=fmt),
            reference_kernels.gemm_4bit(x[:, :64], blocks, scales, bias, format=fmt, in_features=64, out_features=9),
            rtol=1e-5, atol=1e-5)
    H_, KVH, D, S = 4, 2, 16, 11
    for window, C, past, new in ((6, 6, (0, 4, 9), (11, 0, 5)), (0, 40, (0, 20, 3), (11, 2, 0))):
        B = len(past)
        a = [r.standard_normal(s).astype(np.float32) for s in
             ((B, S, H_ * D), (B, S, KVH * D), (B, S, KVH * D), (H_,), (64, D // 2), (64, D // 2),
              (B, KVH, C, D), (B, KVH, C, D))]
        lens = (np.array(past, np.int32), np.array(new, np.int32))
        akw = dict(num_heads=H_, num_kv_heads=KVH, head_dim=D, window=window, scale=0.25)
        got = fallback_ref.sink_attention(*a, *lens, **akw)
        want = reference_kernels.sink_attention(*a, *lens, **akw)
        for g, wv in zip(got, want):
            np.testing.assert_allclose(g, wv, rtol=1e-5, atol=1e-5)


def test_cases_respect_the_op_contract():
    for c in cases.MOE_CASES:
        assert c.H % 32 == 0 and c.I % 32 == 0 and 0 < c.k <= c.E, c
    for c in cases.GEMM_CASES:
        assert c.K % 32 == 0, c
    for c in cases.ATTN_CASES:
        assert len(c.past) == len(c.new) and all(0 <= n <= c.S for n in c.new), c
        assert c.H % c.KVH == 0 and c.D in (16, 32, 64, 128), c
        if c.window:
            assert c.C == c.window, c  # ring cache
        rows_ok = [p >= 0 and (c.window or p + n <= c.C) for p, n in zip(c.past, c.new)]
        assert [b for b, ok in enumerate(rows_ok) if not ok] == list(c.bad_rows), c  # bad rows are declared
    assert any(c.bad_rows for c in cases.ATTN_CASES) and any(g.nan_rows for g in cases.GEMM_CASES)
    names = [c.name for c in cases.MOE_CASES] + [c.name for c in cases.ATTN_CASES]
    assert any("120b" in n for n in names) and any("512" in n for n in names)
    assert any(c.tokens > 512 for c in cases.MOE_CASES)  # crosses the launcher's token chunk


@pytest.fixture(scope="module")
def kernel_library(tmp_path_factory):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found: gpu_check build step not exercised")
    sys.path.insert(0, str(ROOT / "plugins"))
    import gpu_check

    cudart = build.find_cudart(gpu_check.cuda_home(nvcc))
    lib = build.build_library(ROOT, tmp_path_factory.mktemp("gpucheck"), nvcc, str(Path(cudart).parent), "sm_89")
    return cuda_rt.Kernels(str(lib))


def test_built_library_answers_host_side_through_ctypes(kernel_library):
    """gpu_check's own build + ctypes bindings, exercised on paths that return before any CUDA call."""
    k = kernel_library
    ws = k.size("gpe_moe_mxfp4_workspace_size", 16, 32, 4, 2880, 2880)
    assert ws >= 16 * 4 * (2880 + 2880) * 4  # fp32 rows of every (token, expert) pair
    assert k.size("gpe_moe_mxfp4_workspace_size", 16, 32, 4, 2880, 2881) == 0  # I % 32 != 0
    assert k.size("gpe_sink_attention_workspace_size", 1, 1, 64, 8, 64, 0) > 0
    assert k.size("gpe_sink_attention_workspace_size", 1, 1, 64, 8, 48, 0) == 0  # head_dim 48 unsupported
    null = None
    # gpe_moe_mxfp4(dtype, path, tokens, E, k, H, I, limit, alpha, offset, hidden, batch, new_len,
    #               9 weight pointers (router .. down_bias), output, workspace, workspace_size, stream)
    HIDDEN, BATCH, NEW_LEN, WS_SIZE = 10, 11, 12, 23
    pointers = [HIDDEN] + list(range(13, 23))  # hidden, the weights, output, workspace
    moe_args = [2, 0, 4, 32, 4, 2880, 2880, 7.0, 1.702, 1.0, null, 1, null] + [null] * 10 + [0, null]
    assert k.lib.gpe_moe_mxfp4(*moe_args) == -3  # GPE_ERR_NULL_POINTER
    assert k.lib.gpe_moe_mxfp4(*(moe_args[:2] + [0] + moe_args[3:])) == 0  # zero tokens: nothing to do
    bad_dtype = [7] + moe_args[1:]
    for i in pointers:
        bad_dtype[i] = 1 << 40  # non-null 16-byte aligned pointers, never dereferenced: the dtype is checked on the host
    bad_dtype[WS_SIZE] = 1 << 40
    assert k.lib.gpe_moe_mxfp4(*bad_dtype) == -1  # GPE_ERR_BAD_DTYPE
    small_ws = list(bad_dtype)
    small_ws[0], small_ws[WS_SIZE] = 2, 16
    assert k.lib.gpe_moe_mxfp4(*small_ws) == -4  # GPE_ERR_WORKSPACE_TOO_SMALL
    uneven = list(small_ws)
    uneven[BATCH], uneven[NEW_LEN] = 3, 1 << 40  # 4 tokens are not whole rows of a batch of 3
    assert k.lib.gpe_moe_mxfp4(*uneven) == -2  # GPE_ERR_BAD_SHAPE, before any launch
    assert k.lib.gpe_gemm_4bit(1, 0, 0, 3, 100, 8, *[null] * 6) == -2  # K % 32 != 0
    assert k.lib.gpe_gemm_4bit(1, 5, 0, 3, 64, 8, *[null] * 6) == -5  # unknown format
    assert b"workspace" in k.lib.gpe_status_string(-4)
    P = 1 << 40  # 16-byte aligned, never dereferenced: each call below returns before any launch
    assert k.lib.gpe_gemm_4bit(2, 1, 3, 3, 64, 8, P, P, P, None, P, None) == -5  # int4 kept off the MMA path
    assert k.lib.gpe_gemm_4bit(2, 0, 1, 3, 64, 8, P + 8, P, P, None, P, None) == -6  # GPE_ERR_MISALIGNED input
    assert k.lib.gpe_gemm_4bit(2, 0, 1, 3, 64, 8, P, P + 4, P, None, P, None) == -6  # misaligned weight blocks
    assert k.lib.gpe_gemm_4bit(2, 1, 1, 3, 64, 8, P, P, P + 1, None, P, None) == -6  # odd fp16 scales address
    moe_ok = [2, 1, 4, 32, 4, 2880, 2880, 7.0, 1.702, 1.0, P, 1, None] + [P] * 10 + [1 << 40, None]
    moe_bad = list(moe_ok)
    moe_bad[HIDDEN] = P + 2
    assert k.lib.gpe_moe_mxfp4(*moe_bad) == -6
    attn_ws = k.size("gpe_sink_attention_workspace_size", 1, 1, 4, 2, 16, 0)
    attn = [2, 1, 1, 4, 2, 16, 8, 0, 0.25, 16, 0] + [P] * 14 + [attn_ws, None]
    for port in (13, 17, 18, 24):  # value, past_key, past_value, workspace
        bad = list(attn)
        bad[port] = P + 8
        assert k.lib.gpe_sink_attention(*bad) == -6, port
    assert b"aligned" in k.lib.gpe_status_string(-6)
    with pytest.raises(RuntimeError, match="null"):
        k.call("gpe_gemm_4bit", 1, 0, 0, 3, 64, 8, None, None, None, None, None, None)


# ---- the script on a bare machine ------------------------------------------------------------
GPU_CHECK = ROOT / "plugins" / "gpu_check.py"


def run_gpu_check(python: str, *args: str, timeout: int = 600):
    import subprocess

    return subprocess.run([python, str(GPU_CHECK), *args], capture_output=True, text=True, timeout=timeout)


def python_without_numpy() -> str | None:
    import subprocess

    for cand in ("/usr/bin/python3", shutil.which("python3")):
        if cand and subprocess.run([cand, "-c", "import numpy"], capture_output=True).returncode != 0:
            return cand
    return None


def test_first_line_says_what_it_needs_and_found(tmp_path):
    proc = run_gpu_check(sys.executable, str(tmp_path / "res"), "--build-dir", str(tmp_path / "build"))
    first = proc.stdout.splitlines()[0]
    for word in ("needs", "numpy", "nvcc", "driver", "GPU", "cudart", "TensorRT libs", "TensorRT python"):
        assert word in first, first
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # no GPU here: one clear line, exit 2
    meta = json.loads((tmp_path / "res" / "results.json").read_text())["meta"]
    assert meta["env"]["python"] == sys.version.split()[0] and meta["error"]


def test_missing_numpy_is_one_clear_line(tmp_path):
    py = python_without_numpy()
    if py is None:
        pytest.skip("every python3 here has numpy")
    proc = run_gpu_check(py, str(tmp_path / "res"), "--build-dir", str(tmp_path / "build"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "numpy MISSING" in proc.stdout.splitlines()[0] and "Traceback" not in proc.stderr
    assert "numpy is missing" in proc.stdout.splitlines()[-1]


def test_build_dir_never_inside_results(tmp_path):
    proc = run_gpu_check(sys.executable, str(tmp_path), "--build-dir", str(tmp_path / "build"))
    assert proc.returncode == 2 and "must not be inside" in proc.stdout


def test_prebuilt_library_is_carried_with_its_cudart_and_refused_when_stale(tmp_path):
    """--build-only (no numpy needed) leaves library + libcudart + build.json; a run with no nvcc
    (--use-prebuilt stands in for that here) takes it; a changed kernel source makes it stale."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found")
    py = python_without_numpy() or sys.executable
    bdir = tmp_path / "build"
    proc = run_gpu_check(py, "--build-only", "--arch", "sm_90", "--build-dir", str(bdir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (bdir / build.LIB_NAME).exists() and build.cudart_beside(bdir / build.LIB_NAME)
    assert json.loads((bdir / "build.json").read_text())["arch"] == "sm_90"
    assert build.stale_reason(bdir / build.LIB_NAME, ROOT) is None
    proc = run_gpu_check(sys.executable, str(tmp_path / "res"), "--build-dir", str(bdir), "--use-prebuilt")
    assert f"prebuilt library: using {bdir / build.LIB_NAME}" in proc.stdout and proc.returncode == 2  # no GPU here
    info = json.loads((bdir / "build.json").read_text())
    (bdir / "build.json").write_text(json.dumps({**info, "sources_sha256": "0" * 64}))
    proc = run_gpu_check(sys.executable, str(tmp_path / "res"), "--build-dir", str(bdir), "--use-prebuilt")
    assert proc.returncode == 2 and "stale" in proc.stdout


def test_reference_kernels_import_from_a_bare_checkout():
    """On the GPU machine nothing is installed: the repository root on sys.path is enough (no
    site-packages .pth / editable finder here: python -S, numpy and onnx from the path only)."""
    import subprocess
    import sysconfig

    code = ("import sys; sys.path += [sys.argv[1]]; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
            "from gpucheck.refs import Reference; r = Reference(Path(sys.argv[3])); "
            "assert r.error is None, r.error; print(r.rk.__file__)")
    proc = subprocess.run([sys.executable, "-S", "-c", code, sysconfig.get_paths()["purelib"],
                           str(ROOT / "plugins"), str(ROOT)], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == (ROOT / "compiler" / "reference_kernels.py").resolve()


def test_results_files_are_written_for_every_record_kind(tmp_path):
    """The writer gpu_check calls at the end (also after a failure): every record shape it can
    get (a compared case, an errored case, benchmarks with and without a fraction) renders."""
    sys.path.insert(0, str(ROOT / "plugins"))
    import gpu_check
    from gpucheck import env

    meta = {"env": env.probe(None, None), "gpu": "test GPU", "cuda": {"runtime": 13000, "driver": 13000},
            "reference": "r", "attention_reference": "a", "seconds": 1.0}
    ok = {"op": "Gemm4bit", "case": "c", "path": "gemv", **data.compare(np.ones(3), np.ones(3), "float32", 4, 0)}
    err = {"op": "MoeMxfp4", "case": "d", "path": "-", "ok": False, "error": "RuntimeError: x"}
    bench = [{"bench": "copy", "ms": 1.0, "GB_per_s": 100.0},
             {"bench": "gemm", "path": "mma", "ms": 2.0, "effective_GB_per_s": 50.0, "fraction_of_peak": 0.5,
              "TFLOP_per_s": 10.0, "fraction_of_fp16_peak": 0.01}, {"bench": "error", "error": "E"}]
    gpu_check.write_results(tmp_path, meta, [ok, err], bench)
    md = (tmp_path / "results.md").read_text()
    assert "| Gemm4bit | c | gemv | yes |" in md and "**ERROR**" in md and "1.0%" in md and "needs" in md
    assert json.loads((tmp_path / "results.json").read_text())["cases"][1]["error"] == "RuntimeError: x"


def test_a_runtime_newer_than_the_driver_is_named():
    from gpucheck import env

    assert "CUDA 12.4" in env.driver_too_old({"driver_cuda": 12040, "cudart_version": 13000})
    assert env.driver_too_old({"driver_cuda": 13000, "cudart_version": 13020}) is None  # minor compatibility
    assert env.driver_too_old({"driver_cuda": None, "cudart_version": 13000}) is None  # no driver: said elsewhere
