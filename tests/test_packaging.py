"""The built wheel holds the product and nothing else, installs under the gptoss_edge namespace
only, and builds without warnings; a checkout imports the same package without installing."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents_and_quiet_build(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                          str(ROOT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "warning" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
    [wheel] = tmp_path.glob("gptoss_edge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert tops == {"gptoss_edge", next(t for t in tops if t.endswith(".dist-info"))}   # no bare compiler/runtime
    for needed in ("gptoss_edge/cli/__init__.py", "gptoss_edge/compiler/compile.py",
                   "gptoss_edge/compiler/graph/model.py", "gptoss_edge/runtime/engine/opener.py",
                   "gptoss_edge/runtime/chat/harmony.py", "gptoss_edge/runtime/tokens/o200k.py",
                   "gptoss_edge/runtime/frontends/grpc_server.py", "gptoss_edge/runtime/clients/chat.py",
                   "gptoss_edge/engine_dir.py", "gptoss_edge/kv_layout.py", "gptoss_edge/v1/llm_pb2.py",
                   "gptoss_edge/kserve/grpc_service_pb2.py", "gptoss_edge/models/default/model.safetensors",
                   "gptoss_edge/models/default/tokenizer.json",
                   "gptoss_edge/models/default/tools/lookup_signature.json"):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # every package folder of the source tree made it in (a new subpackage missing from the
    # package discovery would be silently left out of the wheel)
    for init in [*(ROOT / "compiler").rglob("__init__.py"), *(ROOT / "runtime").rglob("__init__.py")]:
        rel = init.relative_to(ROOT).as_posix()
        assert f"gptoss_edge/{rel}" in names, rel
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text


def test_checkout_imports_without_install(tmp_path):
    """From a plain checkout (repo root on sys.path, nothing installed), the namespaced imports
    resolve to the checkout's files (gptoss_edge/compiler and gptoss_edge/runtime are links)."""
    code = ("import gptoss_edge.runtime.engine.opener as o, gptoss_edge.compiler.compile as c;"
            "print(o.__file__); print(c.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(ROOT)!r}]; "
                          f"sys.path += {[p for p in sys.path if 'site-packages' in p]!r}; " + code],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    files = [Path(line).resolve() for line in out.stdout.split()]
    assert files == [ROOT / "runtime/engine/opener.py", ROOT / "compiler/compile.py"]
