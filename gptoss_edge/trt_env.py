"""What this machine offers TensorRT engines, and whether a built plan belongs here: TensorRT's
Python package, our plugin library, the GPU. Shared by build-engine (records the facts in the
manifest), the TensorRT backend (refuses a plan built elsewhere) and selftest (prints them).

Each missing piece raises TrtUnavailable with one line that says what is missing and what to do.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

PLUGIN_LIBRARY = "libgptoss_edge_plugins.so"
INSTALLED_PLUGIN_DIR = Path("/opt/gptoss-edge/lib")          # deploy/docker/build_plugins.sh installs here
PLUGINS_ENV = "GPTOSS_EDGE_PLUGINS"
CPU_HINT = "on a machine without TensorRT use `--backend reference` (numpy, exact, slow) or an onnxruntime engine"


class TrtUnavailable(RuntimeError):
    """TensorRT, the plugin library or the GPU is missing; the message says which and what to do."""


def import_tensorrt():
    """The `tensorrt` module, or TrtUnavailable."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TrtUnavailable(f"TensorRT is not installed (import tensorrt: {e}); it comes with JetPack "
                             f"(python3-libnvinfer) or NVIDIA's TensorRT container; {CPU_HINT}") from None
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except TrtUnavailable:
        return False
    return True


def plugin_candidates(explicit: str | Path | None, env: Mapping[str, str], repo_root: Path | None) -> list[Path]:
    """Where the plugin library is looked for, in order: --plugins, $GPTOSS_EDGE_PLUGINS, the
    installed location, a CMake build of this checkout (build/plugins)."""
    if explicit:
        return [Path(explicit)]
    out = [Path(env[PLUGINS_ENV])] if env.get(PLUGINS_ENV) else []
    out.append(INSTALLED_PLUGIN_DIR / PLUGIN_LIBRARY)
    if repo_root is not None:
        out.append(repo_root / "build" / "plugins" / PLUGIN_LIBRARY)
    return out


def find_plugin_library(explicit: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    root = Path(__file__).resolve().parent.parent
    candidates = plugin_candidates(explicit, env, root if (root / "plugins" / "CMakeLists.txt").is_file() else None)
    for p in candidates:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in candidates)
    raise TrtUnavailable(f"plugin library {PLUGIN_LIBRARY} not found (looked at {looked}); build it with "
                         f"`cmake -S plugins -B build/plugins -DTensorRT_ROOT=... && cmake --build build/plugins` "
                         f"or pass --plugins PATH")


def load_plugin_library(trt, path: Path, plugins: Sequence = ()) -> None:
    """Load our plugin library into TensorRT's plugin registry and check that every plugin the
    engine names ({name, version, namespace}) has a creator there."""
    registry = trt.get_plugin_registry()
    try:
        handle = registry.load_library(str(path))
    except Exception as e:  # the bindings raise on a failed dlopen in some versions
        raise TrtUnavailable(f"{path}: TensorRT could not load the plugin library ({e})") from None
    if handle is None:
        raise TrtUnavailable(f"{path}: TensorRT could not load the plugin library (see the TensorRT log above)")
    get = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    missing = [f"{p.name} v{p.version} ({p.namespace})" for p in plugins
               if get(p.name, p.version, p.namespace) is None]
    if missing:
        raise TrtUnavailable(f"{path}: no plugin creator for {', '.join(missing)}; the library is from "
                             f"another gptoss-edge version: rebuild plugins/")


def sha256_of(path: Path) -> str:
    from gptoss_edge.engine_dir import hash_file
    return hash_file(Path(path), progress=None).sha256


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a plan is bound to: the TensorRT version, the GPU, the plugin build."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    plugin_sha256: str


def current_facts(trt, cuda, plugin_library: Path) -> Facts:
    dev = cuda.device_facts()
    return Facts(tensorrt_version=trt.__version__, gpu_name=dev.name, compute_capability=dev.compute_capability,
                 plugin_sha256=sha256_of(plugin_library))


def plan_mismatch(record, here: Facts, engine_dir: Path | str) -> str | None:
    """None when the plan (a target_config PlanRecord) was built for this TensorRT, GPU and plugin
    library; else one line saying what differs and to run build-engine again."""
    diffs = []
    if record.tensorrt_version != here.tensorrt_version:
        diffs.append(f"TensorRT {record.tensorrt_version} (here {here.tensorrt_version})")
    if (record.gpu_name, record.compute_capability) != (here.gpu_name, here.compute_capability):
        diffs.append(f"GPU {record.gpu_name} sm_{record.compute_capability.replace('.', '')} "
                     f"(here {here.gpu_name} sm_{here.compute_capability.replace('.', '')})")
    if record.plugin_sha256 != here.plugin_sha256:
        diffs.append(f"plugin library sha256 {record.plugin_sha256[:12]} (here {here.plugin_sha256[:12]})")
    if not diffs:
        return None
    return (f"{engine_dir}/{record.file} was built for {'; '.join(diffs)}: "
            f"run `gptoss-edge build-engine {engine_dir}` again")


def environment_report(cuda_path: str | None = None, plugins: str | Path | None = None) -> tuple[dict, list[str]]:
    """(facts, problems) for selftest: driver, CUDA runtime, GPU, TensorRT, plugin library. Each
    problem is one line; facts hold what could be read."""
    facts: dict = {}
    problems: list[str] = []
    from gptoss_edge.cudart import CudaError, CudaRuntime
    try:
        cuda = CudaRuntime(cuda_path)
        facts["cuda_runtime"] = cuda.runtime_version()
        driver = cuda.driver_version()
        facts["cuda_driver"] = driver if driver != "0.0" else "none (no NVIDIA driver loaded)"
        if cuda.device_count() < 1:
            problems.append("no CUDA GPU visible (cudaGetDeviceCount = 0)")
        else:
            facts["gpu"] = dataclasses.asdict(cuda.device_facts())
    except CudaError as e:
        problems.append(f"no usable CUDA GPU: {e}")
    facts["libnvinfer"] = libnvinfer_version()
    try:
        facts["tensorrt"] = import_tensorrt().__version__
    except TrtUnavailable as e:
        problems.append(str(e))
    try:
        lib = find_plugin_library(plugins)
        facts["plugin_library"] = {"path": str(lib), "sha256": sha256_of(lib)}
    except TrtUnavailable as e:
        problems.append(str(e))
    return facts, problems


def libnvinfer_version() -> str:
    """TensorRT's C++ library as the loader finds it, with its version (getInferLibVersion), or
    "not found": tells a missing Python package (python3-libnvinfer) from a missing TensorRT."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("nvinfer")
    if not name:
        return "not found"
    try:
        v = ctypes.CDLL(name).getInferLibVersion()
    except (OSError, AttributeError) as e:
        return f"{name} (cannot read its version: {e})"
    major, rest = divmod(v, 10000) if v >= 100000 else divmod(v, 1000)
    return f"{name} {major}.{rest // 100}.{rest % 100}"
