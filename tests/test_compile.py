"""compile: format choice from the memory budget, the manifest it writes, progress and summary."""
from __future__ import annotations

import io
import json

import pytest

from gptoss_edge import cli
from gptoss_edge.compiler import opset
from gptoss_edge.compiler.compile import CompileOptions, choose_formats, compile_checkpoint
from gptoss_edge.kv_layout import KvLayout
from gptoss_edge.compiler.config import preset
from gptoss_edge.compiler.graph.model import build_model
from gptoss_edge.compiler.progress import Bar

IO = opset.ENGINE_IO
GiB = 1 << 30


class ConfigOnly:
    def __init__(self, cfg):
        self.config = cfg

    def get(self, key, rows=None):
        raise AssertionError(f"choosing formats read {key}")


# mxfp4 experts (our CPU kernels, built with the package) are exact AND the smallest (17/32 bytes
# per weight, below int4 QMoE's 20/32), so they win both the "most exact" and the "smallest" pick.
@pytest.mark.parametrize("budget, want, says", [(14.0, ("mxfp4", "float"), "fit --max-memory 14 GiB"),
                                               (0.001, ("mxfp4", "4bit"), "nothing fits")])
def test_tiny_formats_follow_the_budget(budget, want, says):
    cfg = preset("tiny")
    experts, dense, reason, size = choose_formats(build_model(ConfigOnly(cfg)), cfg,
                                                  CompileOptions(max_memory_gib=budget))
    assert (experts, dense) == want and says in reason


@pytest.mark.parametrize("budget, want", [(14, "8bit"), (11.7, "4bit"), (16, "float")])
def test_gpt_oss_20b_dense_format_follows_the_budget(budget, want):
    """Weights + a 4096-token KV: mxfp4 experts and bf16 embedding with float32 dense 15.32 GiB,
    with q8_0 dense 12.00 GiB, with 4-bit dense 11.39 GiB: the most exact that fits wins."""
    cfg = preset("gpt-oss-20b")
    experts, dense, reason, size = choose_formats(build_model(ConfigOnly(cfg)), cfg,
                                                  CompileOptions(embedding="bf16", max_memory_gib=budget))
    assert (experts, dense) == ("mxfp4", want)
    assert size + KvLayout.of(cfg).slot_bytes(4096) <= budget * GiB
    assert f"fit --max-memory {budget:g}" in reason


def test_gpt_oss_20b_fits_14_gib_with_mxfp4_experts_and_8bit_dense():
    cfg = preset("gpt-oss-20b")
    experts, dense, reason, size = choose_formats(build_model(ConfigOnly(cfg)), cfg,
                                                  CompileOptions(embedding="bf16", max_memory_gib=14))
    assert (experts, dense) == ("mxfp4", "8bit")
    assert size + KvLayout.of(cfg).slot_bytes(4096) <= 14 * GiB
    assert "fit --max-memory 14" in reason


@pytest.mark.parametrize("budget_gib,dense", [(14, "4bit"), (64, "16bit")])
def test_tensorrt_default_dense_is_the_most_exact_that_fits(budget_gib, dense):
    """gpt-oss-20b fp16: with 16-bit dense layers the memory plan at 4k context is ~15.5 GB
    (13.76 GB checkpoint bytes + logits/activations + runtime overhead), over a 14 GiB device
    budget; with 4-bit dense layers it fits. Same rule as `gptoss-edge plan`."""
    from gptoss_edge.compiler import target_tensorrt
    cfg = preset("gpt-oss-20b")
    experts, got, reason, size = target_tensorrt.choose_formats(
        build_model(ConfigOnly(cfg)), cfg, CompileOptions(target="tensorrt", max_memory_gib=budget_gib))
    assert (experts, got) == ("mxfp4", dense) and f"fits --max-memory {budget_gib}" in reason
    assert size + KvLayout.of(cfg, "float16").slot_bytes(4096) <= budget_gib * GiB


def test_compile_writes_manifest_progress_and_summary(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "engine"
    bar_stream = io.StringIO()
    monkeypatch.setattr("gptoss_edge.compiler.compile.Bar",
                        lambda enabled, **kw: Bar(True, stream=bar_stream, **kw))   # as on a terminal
    assert cli.main(["compile", str(tiny_checkpoint.original), "-o", str(out), "--max-positions", "512"]) == 0
    summary = capsys.readouterr().err
    for word in ("experts    mxfp4, dense float", "embedding  bf16", "model.onnx.data", "peak RSS", "time"):
        assert word in summary
    assert "100.0%" in bar_stream.getvalue() and "/lm_head/" in bar_stream.getvalue()
    m = json.loads((out / "manifest.json").read_text())
    cfg = preset("tiny")
    assert m["target"] == "onnxruntime" and m["opset"] == {"domain": opset.DOMAIN, "version": opset.OPSET_VERSION}
    assert m["tokenizer"] == {"kind": "o200k_harmony"}   # no tokenizer.json beside the weights
    names = [b["name"] for b in m["bindings"]["inputs"]]
    assert names[:3] == [IO.INPUT_IDS, IO.PAST_LEN, IO.NEW_LEN] and IO.past_key(cfg.num_hidden_layers - 1) in names
    assert m["bindings"]["outputs"][0] == {"name": IO.LOGITS, "dtype": "float32", "shape": ["batch", "logits_rows", cfg.vocab_size]}
    tc = m["target_config"]
    assert (tc["experts"], tc["dense"], tc["embedding"], tc["max_positions"]) == ("mxfp4", "float", "bf16", 512)
    # the default engine keeps MoeMxfp4 nodes: the runtime must load our CPU kernels, exact mode
    assert tc["custom_ops"] == {"library": "gptoss_edge_cpu", "activations": "fp32"}
    # One more token grows only the caches whose capacity is not fixed by the graph: K and V of
    # the full-attention layers (1 and 3; the window layers keep 128 rows), each token one
    # [num_kv_heads, head_dim] float32 row of each: 4 x 2 x 16 x 4 = 512 bytes.
    growing = [b["name"] for b in m["bindings"]["inputs"]
               if b["name"].startswith(("past_key.", "past_value.")) and not isinstance(b["shape"][2], int)]
    assert sorted(growing) == ["past_key.1", "past_key.3", "past_value.1", "past_value.3"]
    assert tc["kv_layout"]["full_bytes_per_token"] == len(growing) * cfg.num_key_value_heads * cfg.head_dim * 4 == 512
    assert set(m["files"]) == {"model.onnx", "model.onnx.data"}
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())


def test_compile_reports_bad_checkpoint(tmp_path, capsys):
    assert cli.main(["compile", str(tmp_path / "missing"), "-o", str(tmp_path / "e")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_int8_experts_need_int8_activations(tiny_checkpoint, tmp_path, capsys):
    # ONNX Runtime's CPU QMoE always quantizes the activations of 8-bit experts: asking for float
    # activations is refused in one line that names the exact alternative.
    out = tmp_path / "e"
    assert cli.main(["compile", str(tiny_checkpoint.hf), "-o", str(out), "--experts", "int8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--experts int8 runs only with --activations int8" in err and "--experts mxfp4" in err
    assert "Traceback" not in err and not out.exists()


def test_formats_registry_bytes_match_the_lowered_graph():
    from gptoss_edge.compiler import formats, lower_ort
    cfg = preset("tiny")
    g = build_model(ConfigOnly(cfg))
    n_expert = cfg.num_hidden_layers * cfg.num_local_experts * 3 * cfg.intermediate_size * cfg.hidden_size
    base = lower_ort.lower(g, "float").total_weight_bytes() - n_expert * 4
    for name, f in formats.EXPERTS.items():
        acts = f.activations[0]
        got = lower_ort.lower(g, name, activations=acts).total_weight_bytes() - base
        assert got == pytest.approx(n_expert * f.bytes_per_param, rel=1e-9), name


def test_checkpoint_tokenizer_travels_into_the_engine(tmp_path):
    """A checkpoint with its own tokenizer.json (small models, the embedded default model) gets
    it copied into the engine, hashed by the manifest and named in it; the runtime loads it."""
    from gptoss_edge.compiler.config import preset
    from gptoss_edge.engine_dir import load_manifest
    from gptoss_edge.compiler.synthetic import write_checkpoint
    from gptoss_edge.runtime.engine.opener import open_tokenizer
    from gptoss_edge.runtime.tokens.tokenizer import write_tiny_tokenizer

    ckpt = write_checkpoint(tmp_path / "ckpt", preset("tiny"), "hf", 3)
    write_tiny_tokenizer(ckpt, 512)
    compile_checkpoint(ckpt, tmp_path / "eng", CompileOptions(experts="float", max_positions=256),
                       show_progress=False)
    m = load_manifest(tmp_path / "eng")
    assert m.tokenizer == {"kind": "hf", "file": "tokenizer.json"}
    assert "tokenizer.json" in m.files
    tok = open_tokenizer(m)
    assert tok is not None and tok.decode(tok.encode("import json")) == "import json"


def test_attention_option_reaches_the_graph_and_the_manifest(tiny_checkpoint, tmp_path, capsys):
    import onnx
    for mode, ours in (("auto", 2), ("gqa", 0)):    # tiny: 2 full-attention layers of 4
        out = tmp_path / mode
        assert cli.main(["compile", str(tiny_checkpoint.hf), "-o", str(out), "--experts", "mxfp4",
                         "--attention", mode, "--no-progress"]) == 0
        m = onnx.load(str(out / "model.onnx"), load_external_data=False)
        assert sum(n.op_type == opset.SINK_ATTENTION.op_type for n in m.graph.node) == ours
        assert json.loads((out / "manifest.json").read_text())["target_config"]["attention"] == mode
    with pytest.raises(SystemExit):
        cli.main(["compile", str(tiny_checkpoint.hf), "-o", str(tmp_path / "x"), "--attention", "flash"])
    assert "invalid choice: 'flash'" in capsys.readouterr().err
