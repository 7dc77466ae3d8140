"""OrtBackend and `generate` on a compiled tiny synthetic checkpoint: batched steps equal
unbatched ones, slots are independent, bad requests get BackendError, the CLI works end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gptoss_edge import cli
from gptoss_edge.compiler.config import preset
from gptoss_edge.engine_dir import EngineDirError
from gptoss_edge.runtime.engine.backend import BackendError, StepRow, logits_index, row_result
from gptoss_edge.runtime.engine.generate import generate
from gptoss_edge.runtime.engine.ort_backend import OrtBackend

CFG = preset("tiny")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from gptoss_edge.compiler.synthetic import write_checkpoint
    root = tmp_path_factory.mktemp("ort-backend")
    write_checkpoint(root / "ckpt", CFG, "hf", 5)
    rc = cli.main(["compile", str(root / "ckpt"), "-o", str(root / "engine"), "--target", "onnxruntime",
                   "--experts", "float", "--max-positions", "1024", "--no-progress"])
    assert rc == 0
    return root / "engine"


def prompts(seed=0, lengths=(300, 170, 20)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, CFG.vocab_size, n).tolist() for n in lengths]


def run_alone(be: OrtBackend, tokens, chunk):
    be.release(0)
    out = [be.step([StepRow(0, tokens[i:i + chunk], all_logits=True)])[0] for i in range(0, len(tokens), chunk)]
    be.release(0)
    return np.concatenate(out)


def test_batched_steps_equal_unbatched(engine):
    be = OrtBackend(engine, max_slots=3, max_context=512, max_step_tokens=128)
    ps = prompts()
    alone = [run_alone(be, p, 100) for p in ps]
    chunks = [64, 37, 5]        # rows bring different token counts to every step
    got, pos = [[] for _ in ps], [0] * len(ps)
    while any(pos[i] < len(p) for i, p in enumerate(ps)):
        rows = [StepRow(i, p[pos[i]:pos[i] + chunks[i]], all_logits=True) for i, p in enumerate(ps) if pos[i] < len(p)]
        for r, o in zip(rows, be.step(rows)):
            got[r.slot].append(o)
            pos[r.slot] += len(r.token_ids)
    for i in range(len(ps)):
        assert be.slot_length(i) == len(ps[i])
        # same engine, same weights; only ORT's per-batch GEMM blocking differs: ~1e-7 relative
        np.testing.assert_allclose(np.concatenate(got[i]), alone[i], atol=1e-5 * np.abs(alone[i]).max(), rtol=0)
    # last-token logits (all_logits=False) are the last row of the all-logits answer
    be.release(0)
    last = be.step([StepRow(0, ps[2])])[0]
    np.testing.assert_allclose(last, alone[2][-1], atol=1e-5 * np.abs(last).max(), rtol=0)


def test_logits_index_rows():
    # sampling: one row per slot, its last new token (idle rows, new_len 0, point at 0)
    np.testing.assert_array_equal(logits_index([3, 0, 1], 3, False), [[2], [0], [0]])
    # a row of the step wants all its logits: every position for every row
    np.testing.assert_array_equal(logits_index([3, 1], 3, True), [[0, 1, 2], [0, 1, 2]])
    out = np.arange(12, dtype=np.float32).reshape(3, 4)          # [rows, vocab]
    np.testing.assert_array_equal(row_result(out, 2, True, True), out[:2])
    np.testing.assert_array_equal(row_result(out, 2, True, False), out[1])
    np.testing.assert_array_equal(row_result(out[:1], 2, False, False), out[0])


def test_sampling_steps_match_all_logits_steps(engine):
    """Steps that compute one logits row per slot (the default) give the last row of what the
    every-position steps give, also beside an idle slot and in a step where another row asks
    for all its logits."""
    be = OrtBackend(engine, max_slots=3, max_context=512, max_step_tokens=128)
    a, b, c = prompts(5, (100, 37, 64))
    alone = {name: run_alone(be, p, 128) for name, p in (("a", a), ("b", b), ("c", c + a[:5]))}
    tol = 1e-5 * max(np.abs(x).max() for x in alone.values())
    out = be.step([StepRow(2, c), StepRow(0, a)])                 # slot 1 idle inside the range
    np.testing.assert_allclose(out[0], alone["c"][len(c) - 1], atol=tol, rtol=0)
    np.testing.assert_allclose(out[1], alone["a"][-1], atol=tol, rtol=0)
    out = be.step([StepRow(1, b, all_logits=True), StepRow(2, a[:5])])
    np.testing.assert_allclose(out[0], alone["b"], atol=tol, rtol=0)
    np.testing.assert_allclose(out[1], alone["c"][-1], atol=tol, rtol=0)


def test_idle_slots_inside_the_range_are_untouched(engine):
    """Slots 0 and 3 step together, so slot 1 (holding a sequence) and slot 2 (empty) ride along
    idle: afterwards slot 1 continues exactly as if alone and slot 2 starts from scratch."""
    be = OrtBackend(engine, max_slots=4, max_context=400, max_step_tokens=160)
    a, b, c, d = prompts(3, (150, 90, 40, 130))
    alone = {name: run_alone(be, p, 160) for name, p in (("a", a), ("b", b + c), ("c", c), ("d", d))}
    be.step([StepRow(1, b)])
    out = be.step([StepRow(3, d, all_logits=True), StepRow(0, a, all_logits=True)])   # any row order
    tol = 1e-5 * max(np.abs(x).max() for x in alone.values())
    np.testing.assert_allclose(out[0], alone["d"], atol=tol, rtol=0)
    np.testing.assert_allclose(out[1], alone["a"], atol=tol, rtol=0)
    assert [be.slot_length(i) for i in range(4)] == [150, 90, 0, 130]
    more_b = be.step([StepRow(1, c, all_logits=True)])[0]       # slot 1 continues: b then c
    np.testing.assert_allclose(more_b, alone["b"][len(b):], atol=tol, rtol=0)
    np.testing.assert_allclose(be.step([StepRow(2, c, all_logits=True)])[0], alone["c"], atol=tol, rtol=0)


def test_prefill_steps_leave_idle_slots_out_decode_steps_take_the_range(engine):
    """A chunk step over slots 0 and 3 runs twice (slots 1-2 would carry 64 padded tokens each
    through every layer); a decode step over the same slots runs once (1 padded token each)."""
    be = OrtBackend(engine, max_slots=4, max_context=256, max_step_tokens=64)
    ranges = []
    run = be._run
    be._run = lambda ids, past, new, index, lo, hi, logits: (ranges.append((lo, hi, ids.shape[1])),
                                                            run(ids, past, new, index, lo, hi, logits))
    a, b = prompts(7, (64, 40))
    be.step([StepRow(0, a), StepRow(3, b)])
    assert ranges == [(0, 1, 64), (3, 4, 40)]
    ranges.clear()
    be.step([StepRow(0, [1]), StepRow(3, [2])])
    assert ranges == [(0, 4, 1)]
    assert [be.slot_length(i) for i in range(4)] == [65, 0, 0, 41]


def test_release_makes_slot_reusable(engine):
    be = OrtBackend(engine, max_slots=2, max_context=256)
    a, b = prompts(1, (40, 60))
    first = be.step([StepRow(1, a)])[0]
    be.step([StepRow(1, b)])
    be.release(1)
    assert be.slot_length(1) == 0
    np.testing.assert_array_equal(be.step([StepRow(1, a)])[0], first)


def test_bad_requests(engine):
    be = OrtBackend(engine, max_slots=2, max_context=32, max_step_tokens=16)
    for rows, msg in [([], "at least one row"), ([StepRow(2, [1])], "out of range"),
                      ([StepRow(0, [1]), StepRow(0, [2])], "twice"), ([StepRow(0, [])], "at least one token"),
                      ([StepRow(0, list(range(17)))], "max_step_tokens"),
                      ([StepRow(0, [CFG.vocab_size])], "outside the vocabulary")]:
        with pytest.raises(BackendError, match=msg):
            be.step(rows)
    be.step([StepRow(0, list(range(16)))])
    be.step([StepRow(0, list(range(16)))])
    with pytest.raises(BackendError, match="max_context"):
        be.step([StepRow(0, [1])])
    with pytest.raises(BackendError, match="RoPE positions"):
        OrtBackend(engine, max_slots=2, max_context=1000, max_step_tokens=100)
    one = OrtBackend(engine, max_slots=1, max_context=1024, max_step_tokens=100)   # one slot never pads
    assert one.step([StepRow(0, list(range(100)))])[0].shape == (CFG.vocab_size,)


def test_tampered_engine_is_refused(engine, tmp_path):
    import shutil
    copy = tmp_path / "engine"
    shutil.copytree(engine, copy)
    data = copy / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(EngineDirError, match="model.onnx.data"):
        OrtBackend(copy)


def test_generate_cli_end_to_end(engine, tmp_path):
    p = prompts(2, (150,))[0]
    dump = tmp_path / "logits.npy"
    out = subprocess.run([sys.executable, "-m", "gptoss_edge.cli", "generate", str(engine),
                          "--prompt-ids", ",".join(map(str, p)), "--max-new-tokens", "6", "--temperature", "0",
                          "--dump-logits", str(dump), "--json"], capture_output=True, text=True, check=True)
    tokens = json.loads(out.stdout)["token_ids"]
    logits = np.load(dump)
    assert len(tokens) == 6 and logits.shape == (len(p) + 6, CFG.vocab_size)
    # greedy: each generated token is the argmax of the previous position's logits
    assert tokens == [int(t) for t in logits[len(p) - 1:-1].argmax(-1)]
    # the same run through the library gives the same rows
    gen = generate(OrtBackend(engine, max_slots=1, max_context=200), p, 6, keep_logits=True)
    assert gen.token_ids == tokens
    np.testing.assert_allclose(gen.logits, logits, atol=1e-5 * np.abs(logits).max(), rtol=0)


def test_engine_that_needs_process_env_is_refused():
    # Engines of older versions asked for ONNX Runtime settings through the process environment;
    # the backend no longer touches os.environ and says how to get an equivalent engine.
    from gptoss_edge.kv_layout import KvLayout
    from gptoss_edge.runtime.engine.ort_backend import session_options
    from gptoss_edge.target_config import OnnxRuntimeConfig
    tc = OnnxRuntimeConfig(model_file="model.onnx", max_positions=64, kv_layout=KvLayout.of(preset("tiny")),
                           session_env={"ORT_QMOE_CPU_QNBIT_GEMM": "fp32"})
    with pytest.raises(BackendError, match="recompile"):
        session_options(1, tc)


def test_forced_cpu_kernel_path_that_this_cpu_lacks_or_that_does_not_exist_is_refused():
    from gptoss_edge import cpu_kernels
    from gptoss_edge.kv_layout import KvLayout
    from gptoss_edge.runtime.engine.ort_backend import session_options
    from gptoss_edge.target_config import OnnxRuntimeConfig
    tc = OnnxRuntimeConfig(model_file="model.onnx", max_positions=64, kv_layout=KvLayout.of(preset("tiny")),
                           custom_ops={"library": "gptoss_edge_cpu", "activations": "int8"})
    with pytest.raises(BackendError, match="'sse9'"):
        session_options(1, tc, "sse9")
    missing = [name for name in cpu_kernels.ISAS if cpu_kernels.isa(name) is None]
    for name in missing:             # x86: neon; an AVX2-only CPU: avx512 too
        with pytest.raises(BackendError, match=f"{name!r} is not available on this CPU"):
            session_options(1, tc, name)
    session_options(1, tc, "portable")               # always there
