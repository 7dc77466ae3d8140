"""`gptoss-edge build-engine ENGINE_DIR`: the TensorRT-target ONNX of an engine dir -> engine.plan,
built on the device (TensorRT + our plugin library + the GPU), recorded in the manifest.

Steps (build_engine):
  1. load the plugin library into TensorRT's plugin registry; every plugin the manifest names
     must have a creator (trt_env.load_plugin_library);
  2. weights outside the plan (`streamed_weights`): the packed 4-bit bytes that feed our plugins
     (MXFP4 experts, 4-bit dense blocks/scales: 10.8 of the 12.0 GB of gpt-oss-20b with 4-bit
     dense layers) become engine inputs instead of constants (`externalize`); the builder never
     reads them, the plan does not contain them, and the TensorRT backend loads them from
     model.onnx.data into device buffers once. `--weights-in-plan` keeps them as constants;
  3. TensorRT's ONNX parser on a STRONGLY TYPED network: the int8 weight bytes and int8 inputs of
     the plugins have no quantization scales, which only a strongly typed network accepts; the
     graph states every precision itself (lower_trt casts), so no precision flags are set;
  4. one optimization profile from the manifest (`profile_shapes`: batch 1..max_batch, seq
     1..max_step_tokens, kv_capacity 1..max_context);
  5. KV past/present aliasing: SinkAttention declares present_* aliased to past_* and TensorRT
     honours that with PreviewFeature.ALIASED_PLUGIN_IO_10_03 (TensorRT >= 10.3); where the flag
     does not exist or is refused, the plan is built without it and the backend double-buffers
     the cache (ping-pong: 2x KV memory; the plugin copies the past cache every step);
  6. the builder's workspace from a memory budget (`memory_budget`, derivation in its docstring);
  7. timing cache `timing.cache` beside the plan (reused by the next build on this GPU);
  8. progress on the terminal (IProgressMonitor, TensorRT >= 10.0);
  9. engine.plan streamed to a temp file beside the engine dir (build_serialized_network_to_stream
     where TensorRT has it, else one host buffer), then renamed into the dir together with a
     manifest that records the plan (target_config.plan: TensorRT version, GPU, plugin sha256,
     aliasing, streamed weights, budget): engine_dir.add_files.

Everything except `build_engine` itself is pure and tested on CPU (tests/test_trt_build.py).
`build_engine` is written against TensorRT's documented Python API and has not run yet (tier 1).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import onnx
from onnx import numpy_helper

from gptoss_edge.compiler import opset
from gptoss_edge.target_config import PlanRecord, TensorRTConfig

PLAN_FILE = "engine.plan"
TIMING_CACHE_FILE = "timing.cache"
GiB, MiB = 1 << 30, 1 << 20
WORKSPACE_CAP = 2 * GiB        # TensorRT's default is the whole device; our plugins need < 100 MB
WORKSPACE_FLOOR = 256 * MiB    # below this the builder runs out of tactics for the embedding/lm_head
MARGIN = 1 * GiB               # CUDA context, TensorRT's own allocations, the OS (integrated GPUs)


class BuildError(RuntimeError):
    """build-engine cannot proceed; one line that says why and what to do."""


# ---- optimization profile ---------------------------------------------------------------------

def profile_shapes(tc: TensorRTConfig, bindings: Mapping[str, Any], cfg) -> dict[str, tuple[tuple[int, ...], ...]]:
    """{input name: (min, opt, max) shapes} for every engine input with a symbolic dim. Dims come
    from the manifest's profiles (batch, seq, kv_capacity) and the model (num_kv_heads, head_dim)."""
    fixed = {"num_kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim}
    ranges = {**{k: (v, v, v) for k, v in fixed.items()}, **tc.profiles}
    out = {}
    for b in bindings.get("inputs", []):
        shape = b["shape"]
        if all(isinstance(d, int) for d in shape):
            continue
        unknown = [d for d in shape if not isinstance(d, int) and d not in ranges]
        if unknown:
            raise BuildError(f"input {b['name']!r}: no profile range for dim {unknown[0]!r} "
                             f"(known: {', '.join(sorted(ranges))})")
        out[b["name"]] = tuple(tuple(d if isinstance(d, int) else ranges[d][i] for d in shape) for i in range(3))
    return out


# ---- weights outside the plan -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StreamedWeight:
    name: str
    elem_type: int          # onnx.TensorProto type
    shape: tuple[int, ...]
    location: str           # file beside model.onnx
    offset: int
    length: int


def _external(init: onnx.TensorProto) -> dict[str, str] | None:
    if init.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in init.external_data}


def streamed_weights(model: onnx.ModelProto) -> list[StreamedWeight]:
    """Externally stored initializers that feed a packed-bytes port (BYTES: MXFP4 blocks, E8M0
    scales, int4 blocks) of one of our plugin nodes, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    names: list[str] = []
    for n in model.graph.node:
        if n.domain != opset.DOMAIN:
            continue
        spec = opset.spec(n.op_type)
        for port, value in zip(spec.inputs, n.input):
            if value in inits and port.dtype == opset.BYTES and value not in names and _external(inits[value]):
                names.append(value)
    out = []
    for name in names:
        ext = _external(inits[name])
        out.append(StreamedWeight(name, inits[name].data_type, tuple(inits[name].dims), ext["location"],
                                  int(ext.get("offset", 0)), int(ext["length"])))
    return out


def externalize(model: onnx.ModelProto, weights: list[StreamedWeight]) -> onnx.ModelProto:
    """A copy of `model` where each streamed weight is a graph input (fixed shape) instead of an
    initializer. Only the proto: no weight byte is read."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    moved = {w.name for w in weights}
    kept = [i for i in out.graph.initializer if i.name not in moved]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    out.graph.input.extend(onnx.helper.make_tensor_value_info(w.name, w.elem_type, list(w.shape)) for w in weights)
    return out


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer (external lengths + inline data), from the proto alone."""
    total = 0
    for i in model.graph.initializer:
        ext = _external(i)
        total += int(ext["length"]) if ext else len(i.raw_data) or numpy_helper.to_array(i).nbytes
    return total


# ---- memory budget ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    device_free: int
    integrated: bool
    plan_weights: int       # weights inside the plan: held by the parser (host) and the builder (device)
    streamed_weights: int   # outside the plan: never read by the build
    plan_in_host: int       # the serialized plan held in host memory (0 when streamed to the file)
    workspace: int          # the builder's WORKSPACE pool limit

    @property
    def peak(self) -> int:
        """Estimated build peak on the memory the budget is taken from."""
        host = self.plan_weights + self.plan_in_host if self.integrated else 0
        return host + self.plan_weights + self.workspace + MARGIN

    def to_manifest(self) -> dict[str, int]:
        return {"device_free": self.device_free, "plan_weights": self.plan_weights,
                "streamed_weights": self.streamed_weights, "workspace": self.workspace,
                "estimated_peak": self.peak}


def memory_budget(device_free: int, integrated: bool, plan_weights: int, streamed: int,
                  plan_streamed_to_file: bool) -> MemoryBudget:
    """The builder's workspace limit, derived from what the build holds besides it:

      * the ONNX parser keeps the plan's weights in host memory (P), the builder copies them to
        the device (P), the serialized plan is another host copy (P) unless TensorRT can write
        it as a stream (build_serialized_network_to_stream);
      * weights outside the plan (streamed) cost the build nothing;
      * on a discrete GPU only the device copy competes with the workspace; on an integrated
        GPU (Jetson) host and device share one DRAM, so all copies do;
      * MARGIN (1 GiB) for the CUDA context, TensorRT's own allocations and the OS.
    workspace = min(WORKSPACE_CAP, free - held - MARGIN); BuildError below WORKSPACE_FLOOR.

    gpt-oss-20b, fp16, 4-bit dense layers, on a 16 GB Orin (~13.5 GB free after boot): the plan
    holds the fp16 embedding and the small fp32/fp16 tensors (~1.2 GB), the 10.8 GB of 4-bit
    bytes are streamed; held = 3 x 1.2 GB, workspace = 2 GiB (the cap), estimated peak ~7 GB.
    With --weights-in-plan the same model needs 3 x 12 GB: it cannot build there.
    These are estimates from the sizes above, not measurements (no device build has run yet)."""
    plan_in_host = 0 if plan_streamed_to_file else plan_weights
    held = plan_weights + (plan_weights + plan_in_host if integrated else 0)
    room = device_free - held - MARGIN
    if room < WORKSPACE_FLOOR:
        raise BuildError(
            f"not enough memory to build: the plan's weights need {held / GiB:.1f} GiB "
            f"({plan_weights / GiB:.1f} GiB x {held // max(plan_weights, 1)} copies"
            f"{', shared host/device memory' if integrated else ''}) + {MARGIN / GiB:.0f} GiB margin + "
            f"{WORKSPACE_FLOOR / MiB:.0f} MiB workspace, {device_free / GiB:.1f} GiB free"
            + ("; drop --weights-in-plan" if streamed == 0 else "; compile with --dense 4bit or free memory"))
    return MemoryBudget(device_free=device_free, integrated=integrated, plan_weights=plan_weights,
                        streamed_weights=streamed, plan_in_host=plan_in_host,
                        workspace=int(min(WORKSPACE_CAP, room)))


# ---- TensorRT (needs TensorRT + GPU; tier 1: written against the documented API, not run) ---

def enable_kv_aliasing(trt, config) -> bool:
    """Ask TensorRT to honour the plugins' aliased past/present KV (in-place cache)."""
    feature = getattr(getattr(trt, "PreviewFeature", None), "ALIASED_PLUGIN_IO_10_03", None)
    if feature is None:
        return False
    try:
        config.set_preview_feature(feature, True)
    except Exception:  # noqa: BLE001 - older bindings refuse unknown features
        return False
    return bool(config.get_preview_feature(feature))


def _progress_monitor(trt, write: Callable[[str], None]):
    """A TensorRT IProgressMonitor printing phases (indented by nesting) and step counts."""
    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.depth: dict[str, int] = {}
            self.t0: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.depth[phase_name] = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.t0[phase_name] = time.monotonic()
            write(f"{'  ' * self.depth[phase_name]}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True

        def phase_finish(self, phase_name):
            dt = time.monotonic() - self.t0.pop(phase_name, time.monotonic())
            if dt >= 1.0:
                write(f"{'  ' * self.depth.get(phase_name, 0)}{phase_name}: {dt:.1f} s")
    return Monitor()


def _serialize(trt, builder, network, config, dest: Path) -> bool:
    """Build and write the plan to `dest`; True when it went as a stream (no host copy)."""
    to_stream = getattr(builder, "build_serialized_network_to_stream", None)
    if to_stream is not None and hasattr(trt, "IStreamWriter"):
        class Writer(trt.IStreamWriter):
            def __init__(self, f):
                trt.IStreamWriter.__init__(self)
                self.f = f

            def write(self, data):
                return self.f.write(data)
        with open(dest, "wb") as f:
            ok = to_stream(network, config, Writer(f))
            f.flush()
            os.fsync(f.fileno())
        if not ok:
            raise BuildError("TensorRT could not build the engine (see the TensorRT log above)")
        return True
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT could not build the engine (see the TensorRT log above)")
    with open(dest, "wb") as f:
        f.write(memoryview(plan))
        f.flush()
        os.fsync(f.fileno())
    return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_engine(engine_dir: str | Path, plugins: str | Path | None = None, *, weights_in_plan: bool = False,
                 log: Callable[[str], None] = _stderr):
    """Build engine.plan for this GPU into `engine_dir` (see the module docstring). Returns the
    new EngineManifest. Raises BuildError / TrtUnavailable / EngineDirError / CudaError."""
    from gptoss_edge.cudart import CudaRuntime
    from gptoss_edge.engine_dir import add_files, load_manifest
    from gptoss_edge.target_config import TargetConfigError, target_config_of
    from gptoss_edge import trt_env

    m = load_manifest(engine_dir, verify="sizes")
    if m.target != "tensorrt":
        raise BuildError(f"{m.path}: target {m.target!r}; build-engine builds engines compiled with --target tensorrt")
    try:
        tc = target_config_of(m)
    except TargetConfigError as e:
        raise BuildError(str(e)) from None
    trt = trt_env.import_tensorrt()
    lib = trt_env.find_plugin_library(plugins)
    cuda = CudaRuntime()
    dev = cuda.device_facts()
    log(f"TensorRT {trt.__version__}, {dev.name} (sm_{dev.compute_capability.replace('.', '')}), plugins {lib}")
    logger = trt.Logger(trt.Logger.WARNING)
    trt_env.load_plugin_library(trt, lib, tc.plugins)

    model = onnx.load(str(m.file(tc.model_file)), load_external_data=False)
    streamed = [] if weights_in_plan else streamed_weights(model)
    model = externalize(model, streamed)
    streamed_bytes = sum(w.length for w in streamed)
    can_stream = hasattr(trt.Builder, "build_serialized_network_to_stream") and hasattr(trt, "IStreamWriter")
    budget = memory_budget(dev.free_bytes, dev.integrated, initializer_bytes(model), streamed_bytes, can_stream)
    log(f"memory: plan weights {budget.plan_weights / GiB:.2f} GiB, outside the plan {streamed_bytes / GiB:.2f} GiB, "
        f"workspace {budget.workspace / GiB:.2f} GiB, estimated build peak {budget.peak / GiB:.2f} GiB "
        f"of {dev.free_bytes / GiB:.2f} GiB free")

    builder = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)   # TensorRT 11: always on
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(m.file(tc.model_file))):
        first = parser.get_error(0) if parser.num_errors else "unknown error"
        raise BuildError(f"TensorRT's ONNX parser refused {m.file(tc.model_file)}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, budget.workspace)
    aliased = enable_kv_aliasing(trt, config)
    log("KV cache: past/present aliased in place" if aliased else
        "KV cache: this TensorRT cannot alias plugin I/O; the backend double-buffers the cache (2x KV memory)")
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(tc, m.bindings, m.config).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = m.path / TIMING_CACHE_FILE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")       # a cache from another GPU / TensorRT version
        config.set_timing_cache(cache, False)
    monitor = _progress_monitor(trt, log) if hasattr(trt, "IProgressMonitor") else None
    if monitor is not None:
        config.progress_monitor = monitor        # `monitor` keeps the Python object alive during the build

    tmp = {name: m.path.parent / f".{m.path.name}.{name}.tmp-{os.getpid()}" for name in (PLAN_FILE, TIMING_CACHE_FILE)}
    try:
        t0 = time.monotonic()
        _serialize(trt, builder, network, config, tmp[PLAN_FILE])
        tmp[TIMING_CACHE_FILE].write_bytes(memoryview(config.get_timing_cache().serialize()))
        log(f"built {PLAN_FILE} ({tmp[PLAN_FILE].stat().st_size / GiB:.2f} GiB) in {time.monotonic() - t0:.0f} s")
        record = PlanRecord(file=PLAN_FILE, tensorrt_version=trt.__version__, gpu_name=dev.name,
                            compute_capability=dev.compute_capability, plugin_library=str(lib),
                            plugin_sha256=trt_env.sha256_of(lib), kv_aliased=aliased,
                            streamed_weights=tuple(w.name for w in streamed), timing_cache=TIMING_CACHE_FILE,
                            builder_memory=budget.to_manifest())
        return add_files(m.path, tmp, dataclasses.replace(tc, plan=record).to_manifest())
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def plan_status(engine_dir: str | Path, plugins: str | Path | None = None) -> str | None:
    """None when the engine dir holds a plan built here (this TensorRT, GPU, plugin library);
    else the one-line reason to build one. Needs TensorRT and the GPU to compare."""
    from gptoss_edge.cudart import CudaRuntime
    from gptoss_edge.engine_dir import load_manifest
    from gptoss_edge.target_config import target_config_of
    from gptoss_edge import trt_env

    m = load_manifest(engine_dir, verify="none")
    tc = target_config_of(m)
    if tc.plan is None:
        return f"{m.path}: no TensorRT plan yet"
    trt = trt_env.import_tensorrt()
    here = trt_env.current_facts(trt, CudaRuntime(), trt_env.find_plugin_library(plugins))
    return trt_env.plan_mismatch(tc.plan, here, m.path)


def ensure_plan(engine_dir: str | Path, plugins: str | Path | None = None,
                log: Callable[[str], None] = _stderr) -> bool:
    """Build the plan when a tensorrt engine has none for this device (serve --build-engine,
    build-engine --if-needed); other targets are left alone. Returns whether it built."""
    from gptoss_edge.engine_dir import load_manifest

    if load_manifest(engine_dir, verify="none").target != "tensorrt":
        return False
    reason = plan_status(engine_dir, plugins)
    if reason is None:
        log(f"{engine_dir}: the TensorRT plan is current for this device")
        return False
    log(f"building the TensorRT plan ({reason})")
    build_engine(engine_dir, plugins, log=log)
    return True
