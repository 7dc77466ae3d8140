"""SinkAttention on ONNX Runtime against the gpt-oss attention formula in numpy: lowered to
GroupQueryAttention, and (full layers of engines that load our CPU kernel library) kept for our
kernel (cpu_kernels/attention.cpp) on every code path. Batch 2 with different lengths per row,
prefill chunks mixed with single-token decode steps, idle rows, sliding window (window-sized
cache, chunks longer than it) and full layers, learned sinks, RoPE tables with concentration;
past and present bound to one buffer as the runtime does, and as separate arrays."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gptoss_edge import cpu_kernels
from gptoss_edge.compiler import lower_ort, opset
from gptoss_edge.compiler.graph import onnx_io
from gptoss_edge.compiler.graph.ir import Graph, from_array
from gptoss_edge.compiler.graph.ops import our_node

IO = opset.ENGINE_IO
NH, KVH, D, CAP, POS = 4, 2, 16, 64, 128
rng = np.random.default_rng(11)
ANG = np.arange(POS)[:, None] / (10000.0 ** (np.arange(0, D, 2) / D))[None]
COS, SIN = (np.cos(ANG) * 1.3).astype(np.float32), (np.sin(ANG) * 1.3).astype(np.float32)
SINKS = rng.standard_normal(NH).astype(np.float32)


def rope(x, pos):
    c, s = COS[pos][:, None], SIN[pos][:, None]
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def attention_numpy(q, k, v, window):
    """Whole-sequence gpt-oss attention: q [T, NH*D], k/v [T, KVH*D] -> [T, NH*D]."""
    t = q.shape[0]
    pos = np.arange(t)
    q, k, v = rope(q.reshape(t, NH, D), pos), rope(k.reshape(t, KVH, D), pos), v.reshape(t, KVH, D)
    out = np.zeros((t, NH, D))
    mask = pos[None, :] <= pos[:, None]
    if window:
        mask &= pos[:, None] - pos[None, :] < window
    for h in range(NH):
        kv = h // (NH // KVH)
        s = np.where(mask, q[:, h] @ k[:, kv].T / np.sqrt(D), -np.inf)
        m = np.maximum(s.max(-1, keepdims=True), SINKS[h])
        e = np.exp(s - m)
        out[:, h] = e / (e.sum(-1, keepdims=True) + np.exp(SINKS[h] - m)) @ v[:, kv]
    return out.reshape(t, NH * D).astype(np.float32)


def attention_session(tmp_path, window, ours=False):
    g = Graph("attn", opsets={"": 21, opset.DOMAIN: opset.OPSET_VERSION})
    f, i32 = TensorProto.FLOAT, TensorProto.INT32
    for n, w in (("q", NH * D), ("k", KVH * D), ("v", KVH * D)):
        g.add_input(n, f, ["batch", "seq", w])
    cache = ["batch", KVH, window or CAP, D]     # sliding: window-sized buffer, as in engines
    for n in (IO.past_key(0), IO.past_value(0)):
        g.add_input(n, f, cache)
    g.add_input(IO.PAST_LEN, i32, ["batch"])
    g.add_input(IO.NEW_LEN, i32, ["batch"])
    g.add_output("out", f, ["batch", "seq", NH * D])
    g.add_output(IO.present_key(0), f, cache)
    g.add_output(IO.present_value(0), f, cache)
    our_node(g, opset.SINK_ATTENTION, "/layers.0/attn/sink_attention",
             dict(query="q", key="k", value="v", sinks=g.add_initializer(from_array("/sinks", SINKS)),
                  rope_cos=g.add_initializer(from_array("/rope/cos", COS)),
                  rope_sin=g.add_initializer(from_array("/rope/sin", SIN)),
                  past_key=IO.past_key(0), past_value=IO.past_value(0), past_len=IO.PAST_LEN, new_len=IO.NEW_LEN),
             outputs=["out", IO.present_key(0), IO.present_value(0)],
             num_heads=NH, num_kv_heads=KVH, head_dim=D, window=window, scale=float(1 / np.sqrt(D)))
    lowered = lower_ort.lower(g, experts="mxfp4" if ours else "float")   # mxfp4: the library is loaded
    kept = [n.op_type for n in lowered.nodes if n.domain == opset.DOMAIN]
    assert kept == (["SinkAttention"] if ours else [])
    assert [n.op_type for n in lowered.nodes if n.domain == "com.microsoft"] == ([] if ours else ["GroupQueryAttention"])
    model, _ = onnx_io.save(lowered, tmp_path / "attn.onnx")
    so = ort.SessionOptions()
    if ours:
        cpu_kernels.register(so, "fp32")
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


# (row 0 new tokens, row 1 new tokens) per step: prefill chunks, decode, a row idle (0 tokens)
PLAN = [(10, 3), (1, 7), (1, 1), (0, 1), (12, 1), (1, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("kind,window", [("gqa", 0), ("gqa", 8), ("ours", 0)])
def test_attention_matches_formula_over_steps(tmp_path, kind, window):
    sess = attention_session(tmp_path, window, ours=kind == "ours")
    total = [sum(s[b] for s in PLAN) for b in range(2)]
    seqs = [[rng.standard_normal((total[b], w)).astype(np.float32) for w in (NH * D, KVH * D, KVH * D)]
            for b in range(2)]
    refs = [attention_numpy(*seqs[b], window) for b in range(2)]
    kc = np.zeros((2, KVH, window or CAP, D), np.float32)
    vc = np.zeros_like(kc)
    done = np.zeros(2, np.int32)
    for step in PLAN:
        s = max(step)
        feeds = {n: np.zeros((2, s, w), np.float32) for n, w in (("q", NH * D), ("k", KVH * D), ("v", KVH * D))}
        for b in range(2):
            for j, n in enumerate(("q", "k", "v")):
                feeds[n][b, :step[b]] = seqs[b][j][done[b]:done[b] + step[b]]
        feeds.update({IO.past_key(0): kc, IO.past_value(0): vc, IO.PAST_LEN: done.copy(),
                      IO.NEW_LEN: np.array(step, np.int32)})
        out, kc, vc = sess.run(None, feeds)
        for b in range(2):
            got = out[b, :step[b]]
            want = refs[b][done[b]:done[b] + step[b]]
            # float32 softmax/dot products over <= 40 keys of O(1) values: ~1e-6 absolute
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
        done += np.array(step, np.int32)


def test_our_attention_refuses_bad_lengths_and_sliding_windows_in_one_line(tmp_path):
    sess = attention_session(tmp_path, 0, ours=True)
    q, kv = np.zeros((1, 2, NH * D), np.float32), np.zeros((1, 2, KVH * D), np.float32)
    cache = np.zeros((1, KVH, CAP, D), np.float32)
    feeds = {"q": q, "k": kv, "v": kv, IO.past_key(0): cache, IO.past_value(0): cache,
             IO.PAST_LEN: np.array([CAP - 1], np.int32), IO.NEW_LEN: np.array([2], np.int32)}
    with pytest.raises(Exception, match=f"SinkAttention: row 0 has past_len={CAP - 1}, new_len=2: needs "
                                        f"{CAP + 1} cache slots, the cache has {CAP}"):
        sess.run(None, feeds)
    feeds.update({IO.PAST_LEN: np.array([0], np.int32), IO.NEW_LEN: np.array([3], np.int32)})
    with pytest.raises(Exception, match="SinkAttention: row 0 has past_len=0, new_len=3 with seq=2"):
        sess.run(None, feeds)
    feeds[IO.NEW_LEN] = np.array([2], np.int32)
    out, k, _ = sess.run(None, feeds)              # the same session still serves a good step
    assert out.shape == (1, 2, NH * D) and k.shape == cache.shape
    # A sliding-window node kept for our kernel (the lowering never does this) is refused.
    node = helper.make_node("SinkAttention", ["q", "k", "v", "s", "c", "c", "pk", "pk", "pl", "pl"], ["o", "a", "b"],
                            domain=opset.DOMAIN, num_heads=NH, num_kv_heads=KVH, head_dim=D, window=8, scale=0.25)
    f = TensorProto.FLOAT
    vi = [helper.make_tensor_value_info(n, t, None) for n, t in
          (("q", f), ("k", f), ("v", f), ("s", f), ("c", f), ("pk", f), ("pl", TensorProto.INT32))]
    m = helper.make_model(helper.make_graph([node], "w", vi, [helper.make_tensor_value_info(n, f, None)
                                                              for n in ("o", "a", "b")]),
                          opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(opset.DOMAIN, 1)])
    so = ort.SessionOptions()
    cpu_kernels.register(so, "fp32")
    with pytest.raises(Exception, match=r"runs full-attention layers \(window 0\), got window 8"):
        ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
