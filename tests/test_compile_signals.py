"""SIGTERM / SIGINT during `gptoss-edge compile` remove the temporary engine folder at once
(the probe found a 1.2 GB one left until the next compile) and leave an existing engine as it
was."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from gptoss_edge.engine_dir import load_manifest

CLI = [sys.executable, "-m", "gptoss_edge.cli"]


@pytest.fixture(scope="module")
def deep_checkpoint(tmp_path_factory):
    """Tiny preset with 64 layers: compiles in seconds, long enough to be interrupted."""
    path = tmp_path_factory.mktemp("deep") / "ckpt"
    done = subprocess.run(CLI + ["make-checkpoint", str(path), "--preset", "tiny",
                                 "--layers", "64"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return path


def temp_dirs(out):
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.mark.parametrize("sig, rc", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                     (signal.SIGINT, 130)])
def test_signal_during_compile_removes_the_temporary_folder(deep_checkpoint, readme_tiny_engine,
                                                             tmp_path, sig, rc):
    out = tmp_path / "engine"
    subprocess.run(["cp", "-r", str(readme_tiny_engine), str(out)], check=True)
    before = load_manifest(out).files
    proc = subprocess.Popen(CLI + ["compile", str(deep_checkpoint), "-o", str(out),
                                   "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(30000):                      # bounded: until the writer's folder appears
            if temp_dirs(out) or proc.poll() is not None:
                break
            time.sleep(0.002)
        assert temp_dirs(out), "compile ended before its temporary folder was seen"
        proc.send_signal(sig)
        assert proc.wait(120) == rc, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert temp_dirs(out) == []
    assert load_manifest(out).files == before        # the existing engine untouched, verified
    assert "Traceback" not in proc.stderr.read()
