"""Typed `target_config` of an engine manifest, one frozen dataclass per target: the compiler
writes it (`to_manifest`), the engine opener, the backends and build-engine read it
(`from_manifest` / `target_config_of`). A leaf module: it imports only kv_layout.

  TensorRTConfig      everything the engine build and the TensorRT backend need (profiles,
                      plugins, KV layout) plus `plan`: the record build-engine adds
                      (PlanRecord: plan file, TensorRT version, GPU, plugin library hash, ...).
  OnnxRuntimeConfig   minimal on purpose (the ONNX Runtime lowering is changing): the fields the
                      runtime reads, the format choices kept as they were written (`formats`).

Bad documents raise TargetConfigError with one line naming the field and what was expected.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from gptoss_edge.kv_layout import KvLayout, KvLayoutError

PROFILE_DIMS = ("batch", "seq", "logits_rows", "kv_capacity", "ring")   # optimization-profile dims, see lower_trt.profiles
KV_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}   # TensorRT precision -> KV cache dtype


class TargetConfigError(ValueError):
    """A manifest target_config that cannot be read; the message names the field."""


# ---- field readers (one line per failure) -----------------------------------------------------

def _get(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(doc, Mapping):
        raise TargetConfigError(f"{where}: must be an object, got {type(doc).__name__}")
    if key not in doc:
        raise TargetConfigError(f"{where}: missing field {key!r}")
    return doc[key]


def _int(doc, key: str, where: str, minimum: int = 0) -> int:
    v = _get(doc, key, where)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise TargetConfigError(f"{where}.{key}: must be an integer >= {minimum}, got {v!r}")
    return v


def _str(doc, key: str, where: str, choices: tuple[str, ...] | None = None,
         optional: bool = False) -> str | None:
    v = _get(doc, key, where)
    if v is None and optional:
        return None
    if not isinstance(v, str) or (choices and v not in choices):
        want = f"one of {', '.join(choices)}" if choices else "a string"
        raise TargetConfigError(f"{where}.{key}: must be {want}, got {v!r}")
    return v


def _bool(doc, key: str, where: str) -> bool:
    v = _get(doc, key, where)
    if not isinstance(v, bool):
        raise TargetConfigError(f"{where}.{key}: must be true or false, got {v!r}")
    return v


def _kv_layout(doc, where: str) -> KvLayout:
    try:
        return KvLayout.from_manifest(_get(doc, "kv_layout", where))
    except KvLayoutError as e:
        raise TargetConfigError(f"{where}.{e}") from None


def _no_unknown(doc: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(doc) - known)
    if extra:
        raise TargetConfigError(f"{where}: unknown field(s) {', '.join(map(repr, extra))} (written by a "
                                f"newer gptoss-edge? compile the engine again)")


# ---- TensorRT ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PluginRef:
    name: str
    version: str
    namespace: str

    def to_manifest(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PlanRecord:
    """What build-engine built, and for what: opening the plan elsewhere fails on a mismatch
    (compiler/trt_build.plan_mismatch)."""
    file: str                          # "engine.plan"
    tensorrt_version: str              # tensorrt.__version__ of the builder
    gpu_name: str
    compute_capability: str            # "8.7"
    plugin_library: str                # the path it was loaded from (informational)
    plugin_sha256: str
    kv_aliased: bool                   # past/present KV bound to the same memory
    streamed_weights: tuple[str, ...]  # initializers bound as engine inputs (weights outside the plan)
    timing_cache: str | None           # file name beside the plan, or None
    builder_memory: Mapping[str, int]  # budget figures in bytes (see trt_build.memory_budget)

    _FIELDS = ("file", "tensorrt_version", "gpu_name", "compute_capability", "plugin_library",
               "plugin_sha256", "kv_aliased", "streamed_weights", "timing_cache", "builder_memory")

    def to_manifest(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self._FIELDS}
        d["streamed_weights"] = list(self.streamed_weights)
        d["builder_memory"] = dict(self.builder_memory)
        return d

    @classmethod
    def from_manifest(cls, doc: Any, where: str = "target_config.plan") -> "PlanRecord":
        _no_unknown(doc if isinstance(doc, Mapping) else {}, set(cls._FIELDS), where)
        names = _get(doc, "streamed_weights", where)
        memory = _get(doc, "builder_memory", where)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TargetConfigError(f"{where}.streamed_weights: must be a list of names, got {names!r}")
        if not isinstance(memory, Mapping) or not all(isinstance(v, int) for v in memory.values()):
            raise TargetConfigError(f"{where}.builder_memory: must map names to byte counts, got {memory!r}")
        return cls(file=_str(doc, "file", where), tensorrt_version=_str(doc, "tensorrt_version", where),
                   gpu_name=_str(doc, "gpu_name", where),
                   compute_capability=_str(doc, "compute_capability", where),
                   plugin_library=_str(doc, "plugin_library", where),
                   plugin_sha256=_str(doc, "plugin_sha256", where), kv_aliased=_bool(doc, "kv_aliased", where),
                   streamed_weights=tuple(names), timing_cache=_str(doc, "timing_cache", where, optional=True),
                   builder_memory=dict(memory))


@dataclasses.dataclass(frozen=True)
class TensorRTConfig:
    model_file: str
    precision: str                     # fp16 | bf16 | fp32
    dense: str                         # 16bit | 4bit
    dense_format: str | None           # mxfp4 | int4 with dense 4bit
    experts: str                       # mxfp4
    max_batch: int
    max_context: int
    max_step_tokens: int
    max_positions: int
    profiles: Mapping[str, tuple[int, int, int]]   # dim -> (min, opt, max)
    plugins: tuple[PluginRef, ...]
    opset: Mapping[str, Any]
    kv_layout: KvLayout
    weight_bytes: int
    plan: PlanRecord | None = None     # None until build-engine has run

    TARGET = "tensorrt"
    PRECISIONS = ("fp16", "bf16", "fp32")
    FULL_CAPACITY_DIM = "kv_capacity"

    @property
    def engine_file(self) -> str | None:
        return self.plan.file if self.plan else None

    def to_manifest(self) -> dict[str, Any]:
        return {
            "model_file": self.model_file, "precision": self.precision, "dense": self.dense,
            "dense_format": self.dense_format, "experts": self.experts,
            "max_batch": self.max_batch, "max_context": self.max_context,
            "max_step_tokens": self.max_step_tokens, "max_positions": self.max_positions,
            "profiles": {k: list(v) for k, v in self.profiles.items()},
            "plugins": [p.to_manifest() for p in self.plugins],
            "opset": dict(self.opset),
            "kv_layout": {**self.kv_layout.to_manifest(), "full_capacity_dim": self.FULL_CAPACITY_DIM},
            "weight_bytes": self.weight_bytes,
            "engine_file": self.engine_file,
            "plan": self.plan.to_manifest() if self.plan else None,
        }

    @classmethod
    def from_manifest(cls, doc: Any, where: str = "target_config") -> "TensorRTConfig":
        known = {"model_file", "precision", "dense", "dense_format", "experts", "max_batch", "max_context",
                 "max_step_tokens", "max_positions", "profiles", "plugins", "opset", "kv_layout",
                 "weight_bytes", "engine_file", "plan"}
        _no_unknown(doc if isinstance(doc, Mapping) else {}, known, where)
        plan_doc = doc.get("plan") if isinstance(doc, Mapping) else None
        plan = PlanRecord.from_manifest(plan_doc, f"{where}.plan") if plan_doc is not None else None
        engine_file = doc.get("engine_file") if isinstance(doc, Mapping) else None
        if engine_file != (plan.file if plan else None):
            raise TargetConfigError(f"{where}.engine_file {engine_file!r} disagrees with plan "
                                    f"{plan.file if plan else None!r}")
        tc = cls(model_file=_str(doc, "model_file", where),
                 precision=_str(doc, "precision", where, cls.PRECISIONS),
                 dense=_str(doc, "dense", where, ("16bit", "4bit")),
                 dense_format=_str(doc, "dense_format", where, ("mxfp4", "int4"), optional=True),
                 experts=_str(doc, "experts", where, ("mxfp4",)),
                 max_batch=_int(doc, "max_batch", where, 1), max_context=_int(doc, "max_context", where, 1),
                 max_step_tokens=_int(doc, "max_step_tokens", where, 1),
                 max_positions=_int(doc, "max_positions", where, 1),
                 profiles=_profiles(_get(doc, "profiles", where), f"{where}.profiles"),
                 plugins=_plugins(_get(doc, "plugins", where), f"{where}.plugins"),
                 opset=dict(_get(doc, "opset", where)), kv_layout=_kv_layout(doc, where),
                 weight_bytes=_int(doc, "weight_bytes", where), plan=plan)
        if tc.kv_layout.dtype != KV_DTYPES[tc.precision]:
            raise TargetConfigError(f"{where}.kv_layout.dtype {tc.kv_layout.dtype!r} disagrees with precision "
                                    f"{tc.precision!r} (the cache bindings are {KV_DTYPES[tc.precision]})")
        return tc


def _profiles(doc: Any, where: str) -> dict[str, tuple[int, int, int]]:
    if not isinstance(doc, Mapping) or set(doc) != set(PROFILE_DIMS):
        raise TargetConfigError(f"{where}: must give [min, opt, max] for exactly {', '.join(PROFILE_DIMS)}, "
                                f"got {sorted(doc) if isinstance(doc, Mapping) else doc!r}")
    out = {}
    for dim, r in doc.items():
        ok = (isinstance(r, list) and len(r) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
              and 1 <= r[0] <= r[1] <= r[2])
        if not ok:
            raise TargetConfigError(f"{where}.{dim}: must be [min, opt, max] with 1 <= min <= opt <= max, got {r!r}")
        out[dim] = (r[0], r[1], r[2])
    return out


def _plugins(doc: Any, where: str) -> tuple[PluginRef, ...]:
    if not isinstance(doc, list):
        raise TargetConfigError(f"{where}: must be a list, got {doc!r}")
    return tuple(PluginRef(name=_str(p, "name", f"{where}[{i}]"), version=_str(p, "version", f"{where}[{i}]"),
                           namespace=_str(p, "namespace", f"{where}[{i}]")) for i, p in enumerate(doc))


# ---- ONNX Runtime (minimal) ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OnnxRuntimeConfig:
    model_file: str
    max_positions: int
    kv_layout: KvLayout
    session_env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # older engines only: refused
    formats: Mapping[str, Any] = dataclasses.field(default_factory=dict)      # experts, dense, ... as written
    custom_ops: Mapping[str, str] | None = None   # our CPU kernel library + its activation mode (formats.py)

    TARGET = "onnxruntime"

    def to_manifest(self) -> dict[str, Any]:
        return {"model_file": self.model_file, **dict(self.formats), "max_positions": self.max_positions,
                "kv_layout": self.kv_layout.to_manifest(),
                "session": {"graph_optimization_level": "ORT_ENABLE_ALL", "env": dict(self.session_env)},
                "custom_ops": dict(self.custom_ops) if self.custom_ops else None}

    @classmethod
    def from_manifest(cls, doc: Any, where: str = "target_config") -> "OnnxRuntimeConfig":
        session = _get(doc, "session", where)
        env = _get(session, "env", f"{where}.session")
        if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
            raise TargetConfigError(f"{where}.session.env: must map names to strings, got {env!r}")
        ops = doc.get("custom_ops")
        if ops is not None and (not isinstance(ops, Mapping) or not all(isinstance(v, str) for v in ops.values())):
            raise TargetConfigError(f"{where}.custom_ops: must map names to strings or be null, got {ops!r}")
        formats = {k: v for k, v in doc.items()
                   if k not in ("model_file", "max_positions", "kv_layout", "session", "custom_ops")}
        return cls(model_file=_str(doc, "model_file", where), max_positions=_int(doc, "max_positions", where, 1),
                   kv_layout=_kv_layout(doc, where), session_env=dict(env), formats=formats,
                   custom_ops=dict(ops) if ops else None)


CONFIGS = {c.TARGET: c for c in (TensorRTConfig, OnnxRuntimeConfig)}


def parse_target_config(target: str, doc: Any, where: str = "target_config"):
    """The typed config of `target` from a manifest's target_config object."""
    if target not in CONFIGS:
        raise TargetConfigError(f"{where}: unknown target {target!r} (known: {', '.join(CONFIGS)})")
    return CONFIGS[target].from_manifest(doc, where)


def target_config_of(manifest):
    """The typed target_config of an EngineManifest; errors name the manifest file."""
    where = f"{manifest.path}/manifest.json: target_config"
    return parse_target_config(manifest.target, manifest.target_config, where)
