"""`gptoss-edge make-checkpoint` / `check-checkpoint` end to end (in-process CLI)."""
from __future__ import annotations

import numpy as np

from gptoss_edge.cli import main
from gptoss_edge.compiler.checkpoint import open_checkpoint


def test_make_then_check_both_layouts(tmp_path, capsys):
    for layout in ("hf", "original"):
        out = tmp_path / layout
        assert main(["make-checkpoint", str(out), "--preset", "tiny", "--layers", "6",
                     "--layout", layout, "--seed", "11"]) == 0
        err = capsys.readouterr().err
        assert f"wrote {out}: tiny 6 layers, {layout} layout, seed 11" in err
        assert main(["check-checkpoint", str(out)]) == 0
        assert f"valid {layout} checkpoint, 6 layers" in capsys.readouterr().out
    a, b = open_checkpoint(tmp_path / "hf"), open_checkpoint(tmp_path / "original")
    assert a.config.layer_types == b.config.layer_types == ("sliding_attention", "full_attention") * 3
    name = "model.layers.5.mlp.experts.gate_up_proj_bias"       # a layer beyond the preset's 4
    assert np.array_equal(a.get(name), b.get(name))


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["make-checkpoint", str(out)]) == 0
    assert main(["make-checkpoint", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["make-checkpoint", str(tmp_path / "y"), "--layers", "0"]) == 2
    assert "--layers" in capsys.readouterr().err
    (out / "model.safetensors").write_bytes(b"\0" * 4)
    assert main(["check-checkpoint", str(out)]) == 1
    assert "model.safetensors: file too short" in capsys.readouterr().err
