"""The C++ plugin glue takes its names from plugins/common/opset_generated.h, generated from
compiler/opset.py: the checked-in header must be current, and the glue must not spell any op-set
name itself."""
from __future__ import annotations

import re
from pathlib import Path

from gptoss_edge.compiler import opset, opset_codegen

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"


def test_checked_in_header_is_current():
    header = ROOT / opset_codegen.HEADER_RELPATH
    assert header.read_text() == opset_codegen.render(), (
        "plugins/common/opset_generated.h is stale: run python -m gptoss_edge.compiler.opset_codegen")


def test_check_mode_reports_stale_header(tmp_path):
    stale = tmp_path / "opset_generated.h"
    stale.write_text("// old\n")
    assert opset_codegen.main(["--check", "--output", str(stale)]) == 1
    assert opset_codegen.main(["--output", str(stale)]) == 0
    assert opset_codegen.main(["--check", "--output", str(stale)]) == 0


def test_header_carries_every_name_and_index():
    text = opset_codegen.render()
    assert f'kPluginNamespace = "{opset.PLUGIN_NAMESPACE}"' in text
    for s in opset.OPS:
        assert f'kOpType = "{s.op_type}"' in text
        for i, p in enumerate(s.inputs):
            assert f"{opset_codegen.const_name(p.name)}In = {i}," in text
        for i, p in enumerate(s.outputs):
            assert f"{opset_codegen.const_name(p.name)}Out = {i}," in text
        for a in s.attrs:
            assert f'{{"{a.name}", AttrKind::' in text


def _op_set_names() -> set[str]:
    names = {opset.DOMAIN, opset.PLUGIN_NAMESPACE}
    for s in opset.OPS:
        names.add(s.op_type)
        names.update(a.name for a in s.attrs)
        names.update(p.name for p in s.inputs + s.outputs)
    return names


def test_glue_spells_no_op_set_name():
    """No string literal in the hand-written C++ equals an op-set name (they come from the header)."""
    names = _op_set_names()
    offenders = []
    for path in sorted(PLUGINS.rglob("*")):
        if path.suffix not in {".cpp", ".h", ".cu", ".cuh"} or path.name == "opset_generated.h":
            continue
        for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', path.read_text()):
            if lit in names:
                offenders.append(f"{path.relative_to(ROOT)}: \"{lit}\"")
    assert not offenders, "op-set names typed in the glue (use opset_generated.h):\n" + "\n".join(offenders)
