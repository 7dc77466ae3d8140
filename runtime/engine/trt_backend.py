"""TrtBackend: the Backend protocol on a TensorRT plan (engine.plan, built on this device by
`gptoss-edge build-engine`), through TensorRT's Python runtime and the CUDA runtime
(gptoss_edge/cudart.py: ctypes on libcudart, the project's one CUDA binding; why: its docstring).

Opening refuses, with one line each: an engine without a plan (run build-engine), a plan built
for another TensorRT / GPU / plugin library (trt_env.plan_mismatch), a missing TensorRT or
plugin library (suggests --backend reference), engine I/O that disagrees with the manifest.

Memory (runtime/engine/trt_buffers.py): KV buffers resident on the device for max_slots slots
(window layers: 128-slot rings; full layers: max_context); weights outside the plan loaded once
from model.onnx.data through a pinned staging buffer; a pinned [max_batch, vocab] host buffer
receives the sampled rows' logits.

A step: the rows' slots are cut into runs of consecutive slots (backend.contiguous_runs); a
run executes once with the KV bindings pointing at its slots' block of every cache buffer
(past == present when the plan aliases them; otherwise present goes to a scratch buffer that is
copied back). Rows are right-padded to the run's longest row (past_len/new_len say which tokens
are real). The graph computes logits only for the positions `logits_index` names (one row per
slot when sampling) and only the rows that are returned are copied to the host.

Prefix reuse (runtime/engine/prefix.py): `save_prefix` copies a slot's window-layer rings to host
memory (gpt-oss-20b fp16: 3 MiB per save, at most MAX_SAVED per slot); `truncate` copies one back
and cuts the slot's length, so the slot is bit for bit the state it had at that length (the full
layers' rows below the length are never rewritten).

Decode runs (every row one token) are captured as CUDA graphs, one per (first slot, run length),
on first use after one eager execution of that shape, and replayed afterwards; the inputs
(ids, past_len, new_len, logits_index) live at fixed device addresses and are copied in before each launch.
A capture that fails disables graphs for that shape (eager from then on). Set
GPTOSS_EDGE_TRT_CUDA_GRAPHS=0 to disable them entirely.

Errors: every TensorRT call that reports failure and every CUDA error raise BackendError (the
scheduler ends the streams of that step; the server stays up). After a CUDA error the device
context may be unusable (sticky errors); later steps then fail the same way, each with an error.

Status: written against TensorRT's documented Python API (10.x) and the CUDA runtime; never run
on a GPU (tier 1). What runs on CPU is tested: buffer plan, runs, refusal messages.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from gptoss_edge.compiler import opset
from gptoss_edge.cudart import D2D, D2H, H2D, CudaError, CudaRuntime
from gptoss_edge.engine_dir import load_manifest
from gptoss_edge.runtime.engine.backend import (BackendError, BackendInfo, StepRow, contiguous_runs,
                                                logits_index, target_config, validate_rows)
from gptoss_edge.runtime.engine.prefix import SavedPrefixes, truncation
from gptoss_edge.runtime.engine.trt_buffers import device_plan, kv_buffers

IO = opset.ENGINE_IO
STAGING = 64 << 20          # pinned staging buffer for loading weights outside the plan
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
              "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}   # tensorrt.DataType member -> binding dtype


def require_plan(m, tc):
    """The engine's PlanRecord, or BackendError saying to run build-engine."""
    if tc.plan is None:
        raise BackendError(f"{m.path}: has no TensorRT plan yet: run `gptoss-edge build-engine {m.path}` "
                           f"on this device (or serve it on CPU with --backend reference)")
    return tc.plan


class TrtBackend:
    def __init__(self, engine_dir, *, max_slots: int = 1, max_context: int | None = None,
                 max_step_tokens: int | None = None, verify: bool | str = True, plugins: str | None = None):
        from gptoss_edge import trt_env

        m = self.manifest = load_manifest(engine_dir, verify=verify)
        tc = self.tc = target_config(m)
        if m.target != "tensorrt":
            raise BackendError(f"{m.path}: target {m.target!r}; the tensorrt backend runs tensorrt engines")
        plan = require_plan(m, tc)
        max_context = int(max_context or tc.max_context)
        max_step = int(max_step_tokens or tc.max_step_tokens)
        if max_context > tc.profiles["kv_capacity"][2] or max_step > tc.profiles["seq"][2]:
            raise BackendError(f"max_context {max_context} / max_step_tokens {max_step} exceed the plan's profile "
                               f"(kv_capacity <= {tc.profiles['kv_capacity'][2]}, seq <= {tc.profiles['seq'][2]})")
        if min(max_slots, max_context, max_step) < 1:
            raise BackendError("max_slots, max_context and max_step_tokens must be >= 1")
        self._info = BackendInfo(config=m.config, target="tensorrt", max_slots=max_slots, max_context=max_context,
                                 max_step_tokens=max_step, kv_layout=tc.kv_layout)
        self._max_batch = tc.profiles["batch"][2]
        self._lengths = [0] * max_slots
        self._saved = SavedPrefixes()                   # prefix reuse: ring copies per slot
        self._graphs: dict[tuple[int, int], int | None] = {}
        self._use_graphs = os.environ.get("GPTOSS_EDGE_TRT_CUDA_GRAPHS", "1") != "0"
        self._allocs: list[int] = []
        self._pinned: list[int] = []
        self.cuda = None
        try:
            trt = trt_env.import_tensorrt()
            lib = trt_env.find_plugin_library(plugins)
            self.cuda = CudaRuntime()
            mismatch = trt_env.plan_mismatch(plan, trt_env.current_facts(trt, self.cuda, lib), m.path)
            if mismatch:
                raise BackendError(mismatch)
            trt_env.load_plugin_library(trt, lib, tc.plugins)
            self._open(trt, plan)
        except (trt_env.TrtUnavailable, CudaError) as e:
            self.close()
            raise BackendError(str(e)) from None
        except BaseException:
            self.close()
            raise

    # ---- setup ------------------------------------------------------------------------------
    def _open(self, trt, plan) -> None:
        m, info, cuda = self.manifest, self._info, self.cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(m.file(plan.file).read_bytes())
        if self._engine is None:
            raise BackendError(f"{m.file(plan.file)}: TensorRT could not deserialize the plan (see its log above); "
                               f"run `gptoss-edge build-engine {m.path}` again")
        self._check_io(trt, plan)
        self._ctx = self._engine.create_execution_context()
        if self._ctx is None:
            raise BackendError("TensorRT could not create an execution context (device memory?)")
        self.stream = cuda.stream_create()
        self._aliased = plan.kv_aliased
        self._kv = kv_buffers(info.kv_layout, info.max_slots, info.max_context)
        d = device_plan(info.kv_layout, max_slots=info.max_slots, max_context=info.max_context,
                        max_batch=self._max_batch, max_step=info.max_step_tokens, vocab=info.config.vocab_size,
                        aliased=self._aliased, streamed_bytes=0)
        print(f"tensorrt: KV cache {d.kv_cache / 2**20:.1f} MiB on the device"
              f"{'' if self._aliased else f' + {d.kv_present_scratch / 2**20:.1f} MiB present scratch (no aliasing)'}, "
              f"logits {d.logits / 2**20:.1f} MiB (+ {d.every_position_logits / 2**20:.1f} MiB if a step asks for "
              f"every position's logits)", file=sys.stderr)
        self._keys = [self._alloc(b.nbytes, zero=True) for b in self._kv]
        self._values = [self._alloc(b.nbytes, zero=True) for b in self._kv]
        scratch_slots = 0 if self._aliased else self._max_batch
        self._present = [(self._alloc(scratch_slots * b.slot_stride), self._alloc(scratch_slots * b.slot_stride))
                         for b in self._kv] if scratch_slots else []
        B, S, V = self._max_batch, info.max_step_tokens, info.config.vocab_size
        self._ids = self._alloc(B * S * 8)
        self._past_len = self._alloc(B * 4)
        self._new_len = self._alloc(B * 4)
        self._logits_index = self._alloc(B * S * 8)
        self._logits = self._alloc(B * V * 4)          # one row per slot (sampling)
        self._logits_all = 0                           # [B, S, V]: on the first step that needs it
        self._host_logits_ptr = self._pin(B * V * 4)
        self._host_logits = np.ctypeslib.as_array((ctypes.c_float * (B * V)).from_address(self._host_logits_ptr)
                                                  ).reshape(B, V)
        self._load_streamed_weights(plan)
        cuda.synchronize(self.stream)

    def _check_io(self, trt, plan) -> None:
        """The plan's I/O tensors are the manifest's bindings (+ the streamed weights), with the
        dtypes the buffers are sized for."""
        where, again = self.manifest.path, f"run `gptoss-edge build-engine {self.manifest.path}` again"
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        dtypes = {b["name"]: b["dtype"] for side in ("inputs", "outputs") for b in self.manifest.bindings[side]}
        want = set(dtypes) | set(plan.streamed_weights)
        if names != want:
            raise BackendError(f"{where}: the plan's I/O tensors differ from the manifest "
                               f"({', '.join(sorted(names ^ want)[:3])} ...); {again}")
        for name, dtype in dtypes.items():
            got = TRT_DTYPES.get(getattr(self._engine.get_tensor_dtype(name), "name", ""))
            if got is not None and got != dtype:
                raise BackendError(f"{where}: {name!r} is {got} in the plan, {dtype} in the manifest; {again}")

    def _alloc(self, nbytes: int, zero: bool = False) -> int:
        ptr = self.cuda.malloc(nbytes)
        self._allocs.append(ptr)
        if zero:
            self.cuda.memset_async(ptr, 0, nbytes, self.stream)
        return ptr

    def _pin(self, nbytes: int) -> int:
        ptr = self.cuda.host_alloc(nbytes)
        self._pinned.append(ptr)
        return ptr

    def _load_streamed_weights(self, plan) -> None:
        """Weights outside the plan: read from model.onnx.data into device buffers, once."""
        if not plan.streamed_weights:
            return
        from gptoss_edge.compiler.trt_build import streamed_weights
        proto = onnx.load(str(self.manifest.file(self.tc.model_file)), load_external_data=False)
        by_name = {w.name: w for w in streamed_weights(proto)}
        staging = self._pin(STAGING)
        view = memoryview((ctypes.c_char * STAGING).from_address(staging)).cast("B")
        for name in plan.streamed_weights:
            if name not in by_name:
                raise BackendError(f"{self.manifest.path}: streamed weight {name!r} is not in {self.tc.model_file}")
            w = by_name[name]
            dev = self._alloc(w.length)
            with open(self.manifest.file(w.location), "rb") as f:
                f.seek(w.offset)
                done = 0
                while done < w.length:
                    n = f.readinto(view[:min(STAGING, w.length - done)])
                    if not n:
                        raise BackendError(f"{self.manifest.file(w.location)}: ends inside {name!r}")
                    self.cuda.copy_async(dev + done, staging, n, H2D, self.stream)
                    self.cuda.synchronize(self.stream)          # the staging buffer is reused
                    done += n
            self._set_address(name, dev)
        self._pinned.remove(staging)                            # pinned memory is DRAM on Jetson
        self.cuda.free_host(staging)

    # ---- protocol ---------------------------------------------------------------------------
    @property
    def info(self) -> BackendInfo:
        return self._info

    def slot_length(self, slot: int) -> int:
        self._check_slot(slot)
        return self._lengths[slot]

    def release(self, slot: int) -> None:
        self._check_slot(slot)
        self._lengths[slot] = 0           # stale cache rows are never read again
        self._saved.clear(slot)

    def save_prefix(self, slot: int) -> None:
        """Prefix reuse: copy the slot's window-layer rings (K and V) to host memory."""
        self._check_slot(slot)
        copies = []
        try:
            for ptr, nbytes in self._ring_regions(slot):
                host = np.empty(nbytes, np.uint8)
                self.cuda.copy_async(host.ctypes.data, ptr, nbytes, D2H, self.stream)
                copies.append(host)
            self.cuda.synchronize(self.stream)
        except CudaError as e:
            raise BackendError(f"CUDA error while saving slot {slot}'s prefix: {e}") from None
        self._saved.add(slot, self._lengths[slot], copies)

    def truncate(self, slot: int, length: int) -> int:
        """Prefix reuse: continue from the longest exact prefix <= length."""
        self._check_slot(slot)
        try:
            kept, copies = truncation(self._saved, slot, length, self._lengths[slot])
        except ValueError as e:
            raise BackendError(str(e)) from None
        try:
            for (ptr, nbytes), host in zip(self._ring_regions(slot), copies or ()):
                self.cuda.copy_async(ptr, host.ctypes.data, nbytes, H2D, self.stream)
            self.cuda.synchronize(self.stream)
        except CudaError as e:
            raise BackendError(f"CUDA error while restoring slot {slot}'s prefix: {e}") from None
        self._lengths[slot] = kept
        return kept

    def _ring_regions(self, slot: int) -> list[tuple[int, int]]:
        """(device address, bytes) of the slot's K and V rows in every window-layer ring."""
        rings = set(self._info.kv_layout.ring_layers)
        return [(base + slot * b.slot_stride, b.slot_stride)
                for i, b in enumerate(self._kv) if b.layer in rings
                for base in (self._keys[i], self._values[i])]

    def close(self) -> None:
        cuda, self.cuda = self.cuda, None
        if cuda is None:
            return
        try:
            for exe in self._graphs.values():
                cuda.graph_destroy(exe or 0)
            self._graphs = {}
            self._ctx = self._engine = None
            for p in self._allocs:
                cuda.free(p)
            for p in self._pinned:
                cuda.free_host(p)
            cuda.stream_destroy(getattr(self, "stream", 0))
        except CudaError as e:
            print(f"tensorrt: while closing: {e}", file=sys.stderr)
        self._allocs, self._pinned = [], []

    def step(self, rows: Sequence[StepRow]) -> list[np.ndarray]:
        if self.cuda is None:
            raise BackendError("backend is closed")
        validate_rows(rows, self._info, self._lengths)
        by_slot = {r.slot: r for r in rows}
        out: dict[int, np.ndarray] = {}
        try:
            for run in contiguous_runs(list(by_slot), self._max_batch):
                out.update(self._run([by_slot[s] for s in run]))
        except CudaError as e:
            raise BackendError(f"CUDA error during the step: {e}") from None
        return [out[r.slot] for r in rows]

    # ---- one execution ----------------------------------------------------------------------
    def _run(self, rows: list[StepRow]) -> dict[int, np.ndarray]:
        cuda, lo, n = self.cuda, rows[0].slot, len(rows)
        seq = max(len(r.token_ids) for r in rows)
        ids = np.zeros((n, seq), np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r.token_ids)] = r.token_ids
        past = np.array([self._lengths[r.slot] for r in rows], np.int32)
        new = np.array([len(r.token_ids) for r in rows], np.int32)
        every = any(r.all_logits for r in rows)
        index = logits_index(new, seq, every)
        cuda.copy_async(self._ids, ids.ctypes.data, ids.nbytes, H2D, self.stream)
        cuda.copy_async(self._past_len, past.ctypes.data, past.nbytes, H2D, self.stream)
        cuda.copy_async(self._new_len, new.ctypes.data, new.nbytes, H2D, self.stream)
        cuda.copy_async(self._logits_index, index.ctypes.data, index.nbytes, H2D, self.stream)
        if seq == 1 and self._use_graphs:
            self._decode_graph(lo, n)         # seq 1: one logits row per slot, index 0
        else:
            self._bind(lo, n, seq, index.shape[1])
            self._execute()
        results = self._fetch_logits(rows, index.shape[1], every)
        for r in rows:
            self._lengths[r.slot] += len(r.token_ids)
        return results

    def _bind(self, lo: int, n: int, seq: int, logits_rows: int) -> None:
        cfg = self._info.config
        for name, shape, ptr in ((IO.INPUT_IDS, (n, seq), self._ids), (IO.PAST_LEN, (n,), self._past_len),
                                 (IO.NEW_LEN, (n,), self._new_len),
                                 (IO.LOGITS_INDEX, (n, logits_rows), self._logits_index)):
            self._set_shape(name, shape)
            self._set_address(name, ptr)
        self._set_address(IO.LOGITS, self._logits_for(logits_rows))
        for i, b in enumerate(self._kv):
            shape = (n, cfg.num_key_value_heads, b.capacity, cfg.head_dim)
            for past, present, base, scratch in (
                    (IO.past_key(b.layer), IO.present_key(b.layer), self._keys[i], self._present[i][0] if self._present else 0),
                    (IO.past_value(b.layer), IO.present_value(b.layer), self._values[i], self._present[i][1] if self._present else 0)):
                self._set_shape(past, shape)
                self._set_address(past, base + lo * b.slot_stride)
                self._set_address(present, base + lo * b.slot_stride if self._aliased else scratch)
        self._bound = (lo, n)

    def _execute(self) -> None:
        if not self._ctx.execute_async_v3(self.stream):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        if not self._aliased:
            self._copy_back()

    def _copy_back(self) -> None:
        """No aliasing: present (scratch) -> the run's slots of the cache."""
        lo, n = self._bound
        for i, b in enumerate(self._kv):
            for base, scratch in ((self._keys[i], self._present[i][0]), (self._values[i], self._present[i][1])):
                self.cuda.copy_async(base + lo * b.slot_stride, scratch, n * b.slot_stride, D2D, self.stream)

    def _decode_graph(self, lo: int, n: int) -> None:
        key = (lo, n)
        exe = self._graphs.get(key, 0)
        if exe:                               # addresses and shapes are baked into the graph
            self.cuda.graph_launch(exe, self.stream)
            return
        self._bind(lo, n, 1, 1)
        self._execute()                       # eager first: TensorRT settles shape-dependent state
        if key in self._graphs:               # capture failed before: stay eager
            return
        try:
            self.cuda.synchronize(self.stream)
            self.cuda.begin_capture(self.stream)
            ok = self._ctx.execute_async_v3(self.stream)
            if not self._aliased:
                self._copy_back()
            graph = self.cuda.end_capture(self.stream)
            self._graphs[key] = graph if ok else None
        except CudaError as e:
            self._graphs[key] = None
            print(f"tensorrt: CUDA graph capture for batch {n} at slot {lo} failed ({e}); running it eagerly",
                  file=sys.stderr)
        # the captured graph has not run: the eager execution above produced this step's output

    def _logits_for(self, k: int) -> int:
        """Device buffer for a step's logits [n, k, vocab]: the resident one-row buffer, or (k > 1,
        every position asked for) the [max_batch, max_step, vocab] one, allocated once on first use."""
        if k == 1:
            return self._logits
        if not self._logits_all:
            self._logits_all = self._alloc(self._max_batch * self._info.max_step_tokens * self._info.config.vocab_size * 4)
        return self._logits_all

    def _fetch_logits(self, rows: list[StepRow], k: int, every: bool) -> dict[int, np.ndarray]:
        """The engine's logits [n, k, vocab] (k rows per slot, see backend.logits_index): each
        row's last new token into pinned memory, and all positions for rows that asked."""
        V = self._info.config.vocab_size
        row_bytes = V * 4
        out: dict[int, np.ndarray] = {}
        full = [(b, r) for b, r in enumerate(rows) if r.all_logits]
        for b, r in enumerate(rows):
            src = self._logits_for(k) + (b * k + (len(r.token_ids) - 1 if every else 0)) * row_bytes
            self.cuda.copy_async(self._host_logits_ptr + b * row_bytes, src, row_bytes, D2H, self.stream)
        alls = {}
        for b, r in full:
            arr = np.empty((len(r.token_ids), V), np.float32)
            self.cuda.copy_async(arr.ctypes.data, self._logits_for(k) + b * k * row_bytes, arr.nbytes, D2H, self.stream)
            alls[r.slot] = arr
        self.cuda.synchronize(self.stream)
        for b, r in enumerate(rows):
            out[r.slot] = alls[r.slot] if r.all_logits else self._host_logits[b].copy()
        return out

    # ---- TensorRT calls that report failure by return value --------------------------------
    def _set_shape(self, name: str, shape) -> None:
        if not self._ctx.set_input_shape(name, tuple(shape)):
            raise BackendError(f"TensorRT refused shape {tuple(shape)} for {name!r} (outside the plan's profile?)")

    def _set_address(self, name: str, ptr: int) -> None:
        if not self._ctx.set_tensor_address(name, ptr):
            raise BackendError(f"TensorRT refused the device address of {name!r}")

    def _check_slot(self, slot: int) -> None:
        if not isinstance(slot, (int, np.integer)) or not 0 <= slot < self._info.max_slots:
            raise BackendError(f"slot {slot!r} out of range [0, {self._info.max_slots})")


def open_trt(path: Path, limits, threads, verify) -> TrtBackend:
    """opener.BACKENDS entry."""
    return TrtBackend(path, max_slots=limits.max_slots, max_context=limits.max_context,
                      max_step_tokens=limits.max_step_tokens, verify=verify)
