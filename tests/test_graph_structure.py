"""Structure of the canonical graph and of its ONNX Runtime lowering (no weights are read)."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from gptoss_edge.compiler import lower_ort, opset
from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.graph.model import build_model

IO = opset.ENGINE_IO


class NoReads:
    """A weight source that only has a config: building a graph must not read any tensor."""
    def __init__(self, cfg):
        self.config = cfg

    def get(self, key):
        raise AssertionError(f"graph construction read {key}")


@pytest.fixture(scope="module")
def graph():
    return build_model(NoReads(preset("tiny")), max_positions=512)


def test_names_are_hierarchical_and_unique(graph):
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))
    pattern = re.compile(r"^/(embed|rope|final_norm|lm_head|layers\.\d+/(attn|attn_norm|moe|moe_norm|"
                         r"attn_residual|moe_residual))(/|$)")
    assert [n for n in names if not pattern.match(n)] == []
    assert all(re.match(r"^/", i) for i in graph.initializers)


def test_one_of_our_ops_per_layer_and_engine_io(graph):
    cfg = preset("tiny")
    ours = Counter(n.op_type for n in graph.nodes if n.domain == opset.DOMAIN)
    assert ours == {opset.SINK_ATTENTION.op_type: cfg.num_hidden_layers, opset.MOE_MXFP4.op_type: cfg.num_hidden_layers}
    assert [v.name for v in graph.inputs] == [IO.INPUT_IDS, IO.PAST_LEN, IO.NEW_LEN, IO.LOGITS_INDEX] + [
        n for i in range(cfg.num_hidden_layers) for n in (IO.past_key(i), IO.past_value(i))]
    assert [v.name for v in graph.outputs] == [IO.LOGITS] + [
        n for i in range(cfg.num_hidden_layers) for n in (IO.present_key(i), IO.present_value(i))]
    windows = [next(a.i for a in n.attribute if a.name == "window")
               for n in graph.nodes if n.op_type == opset.SINK_ATTENTION.op_type]
    assert windows == [cfg.sliding_window if cfg.is_sliding(i) else 0 for i in range(cfg.num_hidden_layers)]
    caps = [v.shape[2] for v in graph.inputs if v.name.startswith("past_key.")]
    assert caps == [cfg.sliding_window if cfg.is_sliding(i) else "kv_capacity" for i in range(cfg.num_hidden_layers)]


def test_our_nodes_follow_the_op_set(graph):
    for n in graph.nodes:
        if n.domain != opset.DOMAIN:
            continue
        s = opset.spec(n.op_type)
        assert len(n.input) <= len(s.inputs) and len(n.output) == len(s.outputs)
        assert {a.name for a in n.attribute} == {a.name for a in s.attrs}


@pytest.mark.parametrize("experts", lower_ort.EXPERT_MODES)
@pytest.mark.parametrize("dense", lower_ort.DENSE_MODES)
def test_lowering_leaves_ort_ops_and_our_kernels_ops(graph, experts, dense):
    low = lower_ort.lower(graph, experts, dense, activations="int8" if experts == "int8" else "float")
    ops = Counter((n.domain or "", n.op_type) for n in low.nodes)
    cfg = preset("tiny")
    layers = cfg.num_hidden_layers
    # full-attention layers keep SinkAttention (our kernel) when the engine loads our library anyway
    full = sum(not cfg.is_sliding(i) for i in range(layers))
    ours = experts == "mxfp4" or dense in ("4bit", "8bit")
    assert ops[(opset.DOMAIN, "SinkAttention")] == (full if ours else 0)
    assert ops[("com.microsoft", "GroupQueryAttention")] == layers - (full if ours else 0)
    moe = {"mxfp4": (opset.DOMAIN, "MoeMxfp4"), "float": ("com.microsoft", "MoE")}.get(
        experts, ("com.microsoft", "QMoE"))
    assert ops[moe] == layers
    # dense 4bit / 8bit: q,k,v,o per layer + lm_head become our Gemm4bit / Gemm8bit; the router stays float
    assert ops[(opset.DOMAIN, "Gemm4bit")] == (4 * layers + 1 if dense == "4bit" else 0)
    assert ops[(opset.DOMAIN, "Gemm8bit")] == (4 * layers + 1 if dense == "8bit" else 0)
    # nothing else of our op set survives
    assert sum(c for (d, _), c in ops.items() if d == opset.DOMAIN) == (
        ops[(opset.DOMAIN, "Gemm4bit")] + ops[(opset.DOMAIN, "Gemm8bit")] + (layers if experts == "mxfp4" else 0)
        + ops[(opset.DOMAIN, "SinkAttention")])
    caps = [v.shape[2] for v in low.inputs if v.name.startswith("past_key.")]
    assert caps == [cfg.sliding_window if cfg.is_sliding(i) else "kv_capacity" for i in range(layers)]
    gqa = [n for n in low.nodes if n.op_type == "GroupQueryAttention"]
    window_cache = [next((a.i for a in n.attribute if a.name == "sliding_window_cache"), 0) for n in gqa]
    assert window_cache == [int(cfg.is_sliding(i)) for i in range(layers) if cfg.is_sliding(i) or not ours]
    used = {i for n in low.nodes for i in n.input}
    assert set(low.initializers) <= used


def test_weight_sizes_shrink_with_quantization(graph):
    sizes = {m: lower_ort.lower(graph, m, activations="int8").total_weight_bytes() for m in lower_ort.EXPERT_MODES}
    assert sizes["float"] > sizes["int8"] > sizes["int4"] > sizes["mxfp4"]


def test_attention_gqa_keeps_every_layer_on_group_query_attention(graph):
    low = lower_ort.lower(graph, "mxfp4", "8bit", attention="gqa")
    ops = Counter((n.domain or "", n.op_type) for n in low.nodes)
    assert ops[(opset.DOMAIN, "SinkAttention")] == 0
    assert ops[("com.microsoft", "GroupQueryAttention")] == preset("tiny").num_hidden_layers
    with pytest.raises(ValueError, match="--attention must be one of auto, gqa, got 'flash'"):
        lower_ort.lower(graph, "mxfp4", attention="flash")
