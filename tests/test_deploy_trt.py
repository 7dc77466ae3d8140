"""deploy/ serves TensorRT engines and builds their plan on first start (issue 9, section 5),
checked statically with the real CLI parser: the GPU images' command, the systemd GPU drop-in's
build step, the Kubernetes GPU overlay's init container."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gptoss_edge.cli import build_parser
from test_deploy import (DEPLOY, ENV_FILE, UNIT, dockerfile, env_file, exec_form, expand_exec, last,
                         unit_entries, unit_env, unit_value)

GPU_CONF = DEPLOY / "systemd" / "gptoss-edge.service.d" / "gpu.conf"


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("name, builds", [("Dockerfile.cuda", True), ("Dockerfile.jetson", True),
                                          ("Dockerfile.cpu", False)])
def test_gpu_images_build_the_plan_before_serving(name, builds):
    final = dockerfile(DEPLOY / "docker" / name)
    final = final[max(i for i, (w, _) in enumerate(final) if w == "FROM"):]
    args = parse(exec_form(last(final, "ENTRYPOINT"))[1:] + exec_form(last(final, "CMD")))
    assert args.command == "serve" and args.build_engine is builds and args.backend == "auto"
    if builds:     # the plan is written into the engine dir: the example mounts the volume writable
        text = (DEPLOY / "docker" / name).read_text()
        assert ":/engines:ro" not in text and "-v /srv/engines:/engines " in text


def test_systemd_gpu_dropin_builds_the_plan_as_a_separate_step():
    entries = unit_entries(UNIT) + unit_entries(GPU_CONF)
    env = unit_env(entries, env_file(ENV_FILE))
    pre = expand_exec(unit_value(entries, "ExecStartPre"), env)
    serve = expand_exec(unit_value(entries, "ExecStart"), env)
    assert pre[0] == serve[0]                                      # the same installed gptoss-edge
    build, served = parse(pre[1:]), parse(serve[1:])
    assert build.command == "build-engine" and build.if_needed
    assert build.engine_dir == served.engine_dir
    # the plan and the manifest's temp file go into the engine dir and beside it
    writable = Path(unit_value(entries, "ReadWritePaths"))
    assert served.engine_dir.parent == writable
    assert unit_value(entries, "TimeoutStartSec") == "2h"


@pytest.fixture(scope="module")
def gpu_overlay():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed: kustomize overlay not rendered")
    r = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "kubernetes" / "overlays" / "gpu")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(r.stdout)}
    return objs[("Deployment", "gptoss-edge")]["spec"]["template"]["spec"]


def test_gpu_overlay_builds_the_plan_in_an_init_container(gpu_overlay):
    (init,), (server,) = gpu_overlay["initContainers"], gpu_overlay["containers"]
    build, served = parse(init["args"]), parse(server["args"])
    assert build.command == "build-engine" and build.if_needed and build.engine_dir == served.engine_dir
    assert init["image"] == server["image"] == "gptoss-edge:cuda"
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in (init, server)}
    assert mounts["build-plan"]["engines"]["mountPath"] == mounts["server"]["engines"]["mountPath"]
    assert not mounts["build-plan"]["engines"].get("readOnly")          # writes the plan
    assert mounts["server"]["engines"]["readOnly"]                       # serves it read-only
    assert str(served.engine_dir).startswith(mounts["server"]["engines"]["mountPath"] + "/")
    for c in (init, server):
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
