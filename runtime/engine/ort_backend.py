"""OrtBackend: the Backend protocol on an ONNX Runtime engine directory (CPU).

KV cache: the backend owns, per layer, key and value arrays [max_slots, kv_heads, capacity,
head_dim] float32. Full-attention layers: capacity = max_context, plus max_step_tokens of slack
when max_slots > 1 (rows are right-padded to the longest row of a step and GroupQueryAttention
needs past_len + padded step <= capacity). Sliding layers: the window (the engine's binding
shape; ONNX Runtime keeps the most recent positions there and evicts itself). Zero pages cost
nothing until touched. GroupQueryAttention writes in place: past_* and present_* are bound to
the same memory, no cache is ever copied.

A step over several slots runs a contiguous slot range [lowest, highest] as one right-padded
batch: each stepping row brings its tokens (past_len = tokens cached, new_len = valid tokens); a
slot of the range that is not in the step rides along idle (new_len 0: its cache is left as it
is, its outputs are dropped). Padded positions never enter a cache. Decode steps run the whole
range at once; longer steps run each range of consecutive stepping slots separately
(`step_groups`), so idle slots never carry a chunk of padding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from gptoss_edge.compiler import opset
from gptoss_edge.engine_dir import load_manifest
from gptoss_edge.target_config import OnnxRuntimeConfig
from gptoss_edge.runtime.engine.backend import (BackendError, BackendInfo, StepRow, contiguous_runs,
                                                logits_index, row_result, target_config, validate_rows)
from gptoss_edge.runtime.engine.prefix import SavedPrefixes, truncation

IO = opset.ENGINE_IO


def session_options(threads: int | None = None, tc: OnnxRuntimeConfig | None = None,
                    cpu_isa: str = "auto") -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if tc is not None:
        add_custom_ops(so, tc, cpu_isa)
    return so


def add_custom_ops(so: ort.SessionOptions, tc: OnnxRuntimeConfig, cpu_isa: str = "auto") -> None:
    """The engine's runtime requirement (compiler/formats.py): our CPU kernel library for its
    MoeMxfp4 / Gemm4bit / Gemm8bit nodes, in the engine's activation mode (a per-session
    setting); `cpu_isa` forces a code path ("auto": the best this CPU has)."""
    from gptoss_edge import cpu_kernels
    if tc.session_env:
        raise BackendError("engine needs process environment settings (an int8-experts engine of an older "
                           "gptoss-edge): recompile it (--experts mxfp4 is exact and smaller)")
    if not tc.custom_ops:
        return
    try:
        if cpu_isa != "auto" and cpu_isa in cpu_kernels.ISAS and cpu_kernels.isa(cpu_isa) is None:
            raise BackendError(f"CPU kernel path {cpu_isa!r} is not available on this CPU "
                               f"(the best it has: {cpu_kernels.isa()})")
        cpu_kernels.register(so, tc.custom_ops.get("activations", "fp32"), cpu_isa)
    except cpu_kernels.CpuKernelsMissing as e:
        raise BackendError(f"engine uses our CPU kernels: {e}") from None
    except ValueError as e:                        # an unknown path name
        raise BackendError(str(e)) from None


def step_groups(rows: Sequence[StepRow], max_slots: int) -> list[list[StepRow]]:
    """The executions of one step. Decode steps (one token per row) run the whole slot range at
    once: an idle slot inside it costs one padded token. Longer steps run each range of
    consecutive stepping slots on its own, so an idle slot never carries a whole chunk of padding
    through the MoE and the GEMMs."""
    if max(len(r.token_ids) for r in rows) == 1:
        return [list(rows)]
    by_slot = {r.slot: r for r in rows}
    return [[by_slot[s] for s in run] for run in contiguous_runs(list(by_slot), max_slots)]


class OrtBackend:
    def __init__(self, engine_dir: str | Path, max_slots: int = 4, max_context: int = 4096,
                 max_step_tokens: int = 256, threads: int | None = None, verify: bool | str = True,
                 cpu_isa: str = "auto"):
        self.manifest = load_manifest(engine_dir, verify=verify)
        m = self.manifest
        if m.target != "onnxruntime":
            raise BackendError(f"{m.path}: engine target is {m.target!r}, OrtBackend runs 'onnxruntime'")
        cfg = m.config
        tc = target_config(m)
        positions = tc.max_positions
        if max_slots < 1 or max_context < 1 or max_step_tokens < 1:
            raise BackendError("max_slots, max_context and max_step_tokens must be >= 1")
        # Rows are right-padded to the longest row of a step, so a full-attention buffer needs
        # max_step_tokens of slack (and RoPE rows for it); one slot never pads.
        slack = max_step_tokens if max_slots > 1 else 0
        if max_context + slack > positions:
            raise BackendError(f"max_context {max_context} + max_step_tokens {max_step_tokens} exceeds the "
                               f"engine's {positions} RoPE positions (compile with a larger --max-positions)")
        self.session = ort.InferenceSession(str(m.file(tc.model_file)), session_options(threads, tc, cpu_isa),
                                            providers=["CPUExecutionProvider"])
        self.cfg = cfg
        self.kv = tc.kv_layout
        caps = [self.kv.capacity(i, max_context + slack) for i in range(cfg.num_hidden_layers)]
        self._check_ring_bindings()
        shapes = [(max_slots, cfg.num_key_value_heads, c, cfg.head_dim) for c in caps]
        self._keys = [np.zeros(shape, np.float32) for shape in shapes]
        self._values = [np.zeros(shape, np.float32) for shape in shapes]
        self._lengths = [0] * max_slots
        self._saved = SavedPrefixes()                   # prefix reuse: window buffers per slot
        self._info = BackendInfo(config=cfg, target="onnxruntime", max_slots=max_slots,
                                 max_context=max_context, max_step_tokens=max_step_tokens,
                                 kv_layout=self.kv)

    # ---- protocol ---------------------------------------------------------------------------
    @property
    def info(self) -> BackendInfo:
        return self._info

    def slot_length(self, slot: int) -> int:
        return self._lengths[self._check_slot(slot)]

    def release(self, slot: int) -> None:
        self._lengths[self._check_slot(slot)] = 0     # stale cache rows are never read again
        self._saved.clear(slot)

    def save_prefix(self, slot: int) -> None:
        """Prefix reuse (backend.py): copy the slot's window-layer buffers at its length."""
        s = self._check_slot(slot)
        rows = [(self._keys[i][s].copy(), self._values[i][s].copy()) for i in self.kv.ring_layers]
        self._saved.add(s, self._lengths[s], rows)

    def truncate(self, slot: int, length: int) -> int:
        """Prefix reuse (backend.py): continue from the longest exact prefix <= length."""
        s = self._check_slot(slot)
        try:
            kept, rows = truncation(self._saved, s, length, self._lengths[s])
        except ValueError as e:
            raise BackendError(str(e)) from None
        for i, (k, v) in zip(self.kv.ring_layers, rows or ()):
            self._keys[i][s] = k
            self._values[i][s] = v
        self._lengths[s] = kept
        return kept

    def close(self) -> None:
        self.session = None
        self._keys = self._values = []

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        self._validate(rows)
        out: dict[int, np.ndarray] = {}
        for group in step_groups(rows, self._info.max_slots):
            out.update(zip((r.slot for r in group), self._step_range(group)))
        return [out[r.slot] for r in rows]

    # ---- internals --------------------------------------------------------------------------
    def _step_range(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        """One execution over the slot range [lowest, highest] of `rows` (module docstring)."""
        lo, hi = min(r.slot for r in rows), max(r.slot for r in rows) + 1
        s = max(len(r.token_ids) for r in rows)
        ids = np.zeros((hi - lo, s), np.int64)
        # idle rows: new_len 0; past_len >= 1 because the op needs >= 1 token per row (an empty
        # idle slot claims one cached token that nothing reads)
        past = np.array([max(self._lengths[i], 1) for i in range(lo, hi)], np.int32)
        new = np.zeros(hi - lo, np.int32)
        for r in rows:
            ids[r.slot - lo, :len(r.token_ids)] = r.token_ids
            past[r.slot - lo] = self._lengths[r.slot]
            new[r.slot - lo] = len(r.token_ids)
        every = any(r.all_logits for r in rows)
        index = logits_index(new, s, every)
        logits = np.empty((hi - lo, index.shape[1], self.cfg.vocab_size), np.float32)
        self._run(ids, past, new, index, lo, hi, logits)
        out = []
        for r in rows:
            n = len(r.token_ids)
            self._lengths[r.slot] += n
            out.append(row_result(logits[r.slot - lo], n, every, r.all_logits))
        return out

    def _run(self, ids, past, new, index, lo: int, hi: int, logits) -> None:
        if self.session is None:
            raise BackendError("backend is closed")
        io = self.session.io_binding()
        io.bind_cpu_input(IO.INPUT_IDS, ids)
        io.bind_cpu_input(IO.PAST_LEN, past)
        io.bind_cpu_input(IO.NEW_LEN, new)
        io.bind_cpu_input(IO.LOGITS_INDEX, index)
        for layer, (k, v) in enumerate(zip(self._keys, self._values)):
            for name_in, name_out, buf in ((IO.past_key(layer), IO.present_key(layer), k[lo:hi]),
                                           (IO.past_value(layer), IO.present_value(layer), v[lo:hi])):
                ov = ort.OrtValue.ortvalue_from_numpy(buf)        # a view of the slots' rows
                io.bind_ortvalue_input(name_in, ov)
                io.bind_ortvalue_output(name_out, ov)             # in place: present == past
        io.bind_output(IO.LOGITS, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(io)

    def _check_ring_bindings(self) -> None:
        """The graph's fixed cache dims (window layers) must be the kv_layout's ring size."""
        dims = {b.get("name"): b["shape"][2] for b in self.manifest.bindings.get("inputs", [])
                if isinstance(b, dict) and len(b.get("shape", ())) == 4}
        for i in range(self.cfg.num_hidden_layers):
            name = IO.past_key(i)
            if name not in dims:
                raise BackendError(f"{self.manifest.path}: manifest has no binding {name!r}")
            want = self.kv.ring_slots if i in self.kv.ring_layers else None
            if (dims[name] if isinstance(dims[name], int) else None) != want:
                raise BackendError(f"{self.manifest.path}: binding {name!r} capacity {dims[name]!r} "
                                   f"disagrees with kv_layout ({want or 'sized by the runtime'})")

    def _check_slot(self, slot: int) -> int:
        if not isinstance(slot, (int, np.integer)) or not 0 <= slot < self._info.max_slots:
            raise BackendError(f"slot {slot!r} out of range [0, {self._info.max_slots})")
        return int(slot)

    def _validate(self, rows: Sequence[StepRow]) -> None:
        validate_rows(rows, self._info, self._lengths)
