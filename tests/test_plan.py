"""Memory plan figures: the checkpoint accounting of DESIGN.md, KV rings, the 16 GB verdicts."""
from __future__ import annotations

import json

import pytest

from gptoss_edge.cli import main
from gptoss_edge.compiler import plan as P
from gptoss_edge.compiler.config import preset

GB = 1e9
KIB = 1024


def test_20b_checkpoint_accounting_matches_release():
    b = P.checkpoint_bytes(preset("gpt-oss-20b"))
    # DESIGN.md: 13.76 GB = 10.15 GB MXFP4 experts + 3.61 GB bf16 (figures rounded to 10 MB).
    assert sum(b.values()) / GB == pytest.approx(13.76, abs=0.005)
    assert b["experts"] / GB == pytest.approx(10.15, abs=0.005)
    assert (sum(b.values()) - b["experts"]) / GB == pytest.approx(3.61, abs=0.005)
    assert b["attention"] / GB == pytest.approx(1.27, abs=0.005)      # bytes/token figure of DESIGN
    assert b["lm_head"] / GB == pytest.approx(1.16, abs=0.005)


def test_kv_cache_24_kib_per_token_with_rings():
    cfg = preset("gpt-oss-20b")
    small = P.memory_plan(cfg, target="tensorrt", context=4096, batch=1)
    large = P.memory_plan(cfg, target="tensorrt", context=8192, batch=1)
    rings = [i.bytes for p in (small, large) for i in p.items if "rings" in i.kind]
    assert rings[0] == rings[1] == 128 * 24 * KIB          # rings do not grow with the context
    full = [i.bytes for i in large.items if i.kind == "full-attention layers"]
    assert full == [8192 * 24 * KIB]                       # 12 full layers x K,V x 8 x 64 x fp16
    # ONNX Runtime (float32) keeps window-sized buffers too: twice the fp16 bytes, same shape.
    ort = P.memory_plan(cfg, target="onnxruntime", context=8192, batch=1)
    kv = {i.kind: i.bytes for i in ort.items if i.section == "kv_cache"}
    assert kv == {"full-attention layers": 8192 * 48 * KIB, "window layers (rings)": 128 * 48 * KIB}


def test_20b_fits_16gb_device_with_8k_context_and_4bit_dense():
    cfg = preset("gpt-oss-20b")
    kw = dict(target="tensorrt", batch=1, dense="4bit", budget_gb=14.0)
    plan = P.memory_plan(cfg, context=8192, **kw)
    assert plan.fits, P.format_plan(plan)
    assert P.max_context(cfg, **kw) >= 8192
    # 16-bit dense weights alone leave no room for runtime, KV and logits in 14 GB.
    assert not P.memory_plan(cfg, context=8192, target="tensorrt", batch=1, dense="16bit").fits


def test_120b_needs_about_65_gb():
    plan = P.memory_plan(preset("gpt-oss-120b"), target="tensorrt", context=8192, batch=1, dense="4bit")
    experts = next(i.bytes for i in plan.items if i.kind == "experts")
    assert experts / GB == pytest.approx(60.91, abs=0.01)   # 36 x 128 x 24.9M params x 17/32 B
    assert 60 * GB < plan.total() < 70 * GB and not plan.fits


def test_bad_options_name_the_option():
    cfg = preset("tiny")
    with pytest.raises(P.PlanError, match="--experts"):
        P.memory_plan(cfg, target="tensorrt", context=64, batch=1, experts="int8")
    with pytest.raises(P.PlanError, match="--context"):
        P.memory_plan(cfg, target="tensorrt", context=10 ** 7, batch=1)


def test_cli_plan_json_and_exit_codes(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(preset("tiny").to_hf_dict()))
    assert main(["plan", str(tmp_path), "--target", "onnxruntime", "--context", "1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["target"] == "onnxruntime" and out["max_context"] > 0
    assert main(["plan", "gpt-oss-120b", "--context", "8192"]) == 1       # does not fit 14 GB
    assert "does NOT fit" in capsys.readouterr().out
    assert main(["plan", "no-such-model"]) == 2
    assert "neither a preset" in capsys.readouterr().err


@pytest.mark.parametrize("precision,dense,fmt", [("fp16", "16bit", "mxfp4"), ("fp32", "16bit", "mxfp4"),
                                                 ("fp16", "4bit", "mxfp4"), ("bf16", "4bit", "int4")])
def test_plan_weights_match_the_lowered_tensorrt_graph(precision, dense, fmt):
    """The plan's per-kind bytes are what lower_trt actually stores (tiny model, no tensor read)."""
    from gptoss_edge.compiler import lower_trt
    from gptoss_edge.compiler.graph.model import build_model

    class ConfigOnly:
        config = preset("tiny")

        def get(self, key):
            raise AssertionError(f"read {key}")

    cfg, positions = preset("tiny"), 1024
    graph = lower_trt.lower(build_model(ConfigOnly(), max_positions=positions), precision=precision,
                            dense=dense, dense_format=fmt)
    plan = P.memory_plan(cfg, target="tensorrt", context=positions, batch=1, dense=dense, dense_format=fmt,
                         precision=precision)
    rope = next(i.bytes for i in plan.items if i.kind == "RoPE tables")
    planned = plan.total("weights") + rope
    # Only the graph's small constants (shapes, axes, eps: a few dozen bytes per layer) are not
    # in the plan.
    assert 0 <= graph.total_weight_bytes() - planned < 1024, (graph.total_weight_bytes(), planned)
