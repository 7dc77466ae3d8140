"""The numpy reference backend: runs an engine directory's ONNX (the TensorRT-target graph, our op
set as plugin nodes) with `onnx.reference.ReferenceEvaluator` and the reference kernels of
compiler/reference_kernels.py. Slow and exact: anyone can check a graph on a CPU before building
it on a device.

KV cache: each slot keeps, per layer, [kv_heads, capacity, head_dim] in the binding's dtype
(window layers: the `window`-slot ring; full layers: max_context slots). A step stacks the slots
it touches into a batch (rows right-padded to the longest), runs the graph once, and writes the
present caches back. Memory: the whole ONNX model with its weights is loaded (tiny and small
models; a 20b graph does not belong here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from gptoss_edge.compiler import opset, schemas
from gptoss_edge.engine_dir import EngineManifest, load_manifest
from gptoss_edge.compiler.reference_kernels import REFERENCE_OPS
from gptoss_edge.runtime.engine.backend import (BackendError, BackendInfo, StepRow, logits_index,
                                                row_result, target_config, validate_rows)
from gptoss_edge.runtime.engine.prefix import SavedPrefixes, truncation

IO = opset.ENGINE_IO
TARGETS = ("tensorrt",)   # graphs made of standard ops + our op set


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class ReferenceBackend:
    def __init__(self, engine_dir, *, max_slots: int | None = None, max_context: int | None = None,
                 max_step_tokens: int | None = None, verify: bool | str = True):
        """Defaults come from the engine's optimization profile (max_batch slots, max_context,
        max_step_tokens); max_context may be smaller (memory), never beyond the RoPE tables."""
        m = self.manifest = load_manifest(engine_dir, verify=verify)
        if m.target not in TARGETS:
            raise BackendError(f"{m.path}: target {m.target!r} has no reference backend "
                               f"(its graph uses that runtime's own ops); compile with --target tensorrt")
        tc = target_config(m)
        positions, max_batch = tc.max_positions, tc.max_batch
        max_context = int(max_context or tc.max_context)
        max_step = int(max_step_tokens or tc.max_step_tokens)
        if min(max_context, max_step, max_slots or 1) < 1:
            raise BackendError("max_slots, max_context and max_step_tokens must be >= 1")
        if max_step > tc.max_step_tokens:
            raise BackendError(f"max_step_tokens {max_step} exceeds the engine profile's {tc.max_step_tokens}")
        if max_context > positions:
            raise BackendError(f"max_context {max_context} exceeds the engine's {positions} RoPE positions")
        self._cfg = m.config
        schemas.register()
        model = onnx.load(str(m.file(tc.model_file)), load_external_data=True)
        self._eval = ReferenceEvaluator(model, new_ops=REFERENCE_OPS)
        self._cache_dtype = {b["name"]: _np_dtype(b["dtype"]) for b in m.bindings["inputs"]}
        self._info = BackendInfo(config=m.config, target="reference", max_slots=max_slots or max_batch,
                                 max_context=max_context, max_step_tokens=max_step,
                                 kv_layout=tc.kv_layout)
        self._max_batch = max_batch
        layers = range(m.config.num_hidden_layers)
        self._cache_pairs = [(IO.past_key(i), IO.present_key(i)) for i in layers] + \
                            [(IO.past_value(i), IO.present_value(i)) for i in layers]
        self._lengths = [0] * self._info.max_slots
        self._caches: list[dict[str, np.ndarray] | None] = [None] * self._info.max_slots
        ring = set(self._info.kv_layout.ring_layers)
        self._ring_names = [n for i in sorted(ring) for n in (IO.past_key(i), IO.past_value(i))]
        self._saved = SavedPrefixes()                   # prefix reuse: window rings per slot

    # ---- Backend protocol ------------------------------------------------------------------
    @property
    def info(self) -> BackendInfo:
        return self._info

    def slot_length(self, slot: int) -> int:
        self._check_slot(slot)
        return self._lengths[slot]

    def release(self, slot: int) -> None:
        self._check_slot(slot)
        self._lengths[slot] = 0
        self._caches[slot] = None
        self._saved.clear(slot)

    def save_prefix(self, slot: int) -> None:
        """Prefix reuse (backend.py): copy the slot's window-layer rings at its length."""
        self._check_slot(slot)
        cache = self._caches[slot]
        rings = {n: cache[n].copy() for n in self._ring_names} if cache is not None else {}
        self._saved.add(slot, self._lengths[slot], rings)

    def truncate(self, slot: int, length: int) -> int:
        """Prefix reuse (backend.py): continue from the longest exact prefix <= length."""
        self._check_slot(slot)
        try:
            kept, rings = truncation(self._saved, slot, length, self._lengths[slot])
        except ValueError as e:
            raise BackendError(str(e)) from None
        if kept == 0:
            self._caches[slot] = None
        elif rings:
            self._caches[slot].update({n: a.copy() for n, a in rings.items()})
        self._lengths[slot] = kept
        return kept

    def close(self) -> None:
        self._eval = None
        self._caches = [None] * self._info.max_slots

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        validate_rows(rows, self._info, self._lengths)
        results: list[np.ndarray] = []
        for start in range(0, len(rows), self._max_batch):        # engine batch limit
            results += self._run(rows[start:start + self._max_batch])
        return results

    # ---- internals -------------------------------------------------------------------------
    def _layer_capacity(self, layer: int) -> int:
        return self._info.kv_layout.capacity(layer, self._info.max_context)

    def _empty_cache(self) -> dict[str, np.ndarray]:
        c = self._cfg
        out = {}
        for i in range(c.num_hidden_layers):
            for name in (IO.past_key(i), IO.past_value(i)):
                out[name] = np.zeros((c.num_key_value_heads, self._layer_capacity(i), c.head_dim),
                                     self._cache_dtype[name])
        return out

    def _check_slot(self, slot: int) -> None:
        if not isinstance(slot, int) or not 0 <= slot < self._info.max_slots:
            raise BackendError(f"slot {slot!r} outside [0, {self._info.max_slots})")

    def _run(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        if self._eval is None:
            raise BackendError("backend is closed")
        seq = max(len(r.token_ids) for r in rows)
        ids = np.zeros((len(rows), seq), np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r.token_ids)] = np.asarray(r.token_ids, np.int64)
        caches = [self._caches[r.slot] or self._empty_cache() for r in rows]
        feeds = {IO.INPUT_IDS: ids,
                 IO.PAST_LEN: np.array([self._lengths[r.slot] for r in rows], np.int32),
                 IO.NEW_LEN: np.array([len(r.token_ids) for r in rows], np.int32)}
        every = any(r.all_logits for r in rows)
        feeds[IO.LOGITS_INDEX] = logits_index(feeds[IO.NEW_LEN], seq, every)
        for past, _ in self._cache_pairs:
            feeds[past] = np.stack([c[past] for c in caches])
        names = [IO.LOGITS] + [present for _, present in self._cache_pairs]
        outs = dict(zip(names, self._eval.run(names, feeds)))
        results = []
        for b, r in enumerate(rows):
            n = len(r.token_ids)
            self._caches[r.slot] = {past: outs[present][b].copy() for past, present in self._cache_pairs}
            self._lengths[r.slot] += n
            results.append(row_result(outs[IO.LOGITS][b].astype(np.float32), n, every, r.all_logits))
        return results
