"""Open an engine directory with the backend that runs it: `open_backend(dir, "auto"|name, ...)`.

  onnxruntime: OrtBackend (engine target onnxruntime)
  reference:   ReferenceBackend, onnx.reference + numpy kernels (engine target tensorrt)
"auto" picks by the manifest's target: onnxruntime -> onnxruntime, tensorrt -> reference (until a
TensorRT runtime backend exists, the reference evaluator is how a TensorRT-target dir runs on CPU).
"""
from __future__ import annotations

from gptoss_edge.compiler.engine_dir import load_manifest
from gptoss_edge.runtime.backend import Backend, BackendError

BACKENDS = ("auto", "onnxruntime", "reference")
_AUTO = {"onnxruntime": "onnxruntime", "tensorrt": "reference"}


def open_backend(engine_dir, backend: str = "auto", *, max_slots: int = 1, max_context: int | None = None,
                 max_step_tokens: int | None = None, threads: int | None = None) -> Backend:
    if backend not in BACKENDS:
        raise BackendError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        target = load_manifest(engine_dir, verify=False).target
        if target not in _AUTO:
            raise BackendError(f"{engine_dir}: no backend runs target {target!r}")
        backend = _AUTO[target]
    if backend == "onnxruntime":
        from gptoss_edge.runtime.ort_backend import OrtBackend
        kw = {k: v for k, v in (("max_context", max_context), ("max_step_tokens", max_step_tokens)) if v}
        return OrtBackend(engine_dir, max_slots=max_slots, threads=threads, **kw)
    from gptoss_edge.runtime.reference_backend import ReferenceBackend
    return ReferenceBackend(engine_dir, max_slots=max_slots, max_context=max_context,
                            max_step_tokens=max_step_tokens)
