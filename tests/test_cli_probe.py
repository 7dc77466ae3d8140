"""Failures a probe of the CLI found, as users meet them: one-line errors for bad serve options
and ports in use, one server per Unix socket path (and a server removes only its own socket),
`chat` past a stale default socket, `bench` on the README's tiny engine."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


CLI = [sys.executable, "-m", "gptoss_edge.cli"]


def run_cli(*args: str, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env)


def assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and "never awaited" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--listen", "garbage"], "expected unix:PATH or HOST:PORT"),
    (["--listen", "unix:"], "empty socket path"),
    (["--listen", "127.0.0.1:99999"], "port 99999 is out of range"),
    (["--max-slots", "0"], "--max-slots must be >= 1"),
    (["--max-context", "0"], "--max-context must be >= 1"),
])
def test_bad_serve_options_fail_in_one_line(readme_tiny_engine, args, needle):
    assert_one_line_error(run_cli("serve", str(readme_tiny_engine), *args), needle)


@pytest.fixture()
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_ports_in_use_fail_in_one_line(readme_tiny_engine, busy_port, tmp_path):
    out = run_cli("serve", str(readme_tiny_engine), "--listen", f"127.0.0.1:{busy_port}")
    assert_one_line_error(out, f"127.0.0.1:{busy_port}", "in use")
    sock = tmp_path / "m.sock"
    out = run_cli("serve", str(readme_tiny_engine), "--listen", f"unix:{sock}",
                  "--metrics-port", str(busy_port))
    assert_one_line_error(out, f"--metrics-port {busy_port}", "in use")
    assert not sock.exists()


def start_server(engine: Path, sock: Path) -> subprocess.Popen:
    proc = subprocess.Popen(CLI + ["serve", str(engine), "--listen", f"unix:{sock}",
                                   "--max-slots", "1", "--max-context", "256"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = proc.stdout.readline()
    assert banner.startswith("serving"), banner + proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_one_server_per_socket_and_each_removes_only_its_own(readme_tiny_engine, tmp_path):
    sock = tmp_path / "edge.sock"
    first = start_server(readme_tiny_engine, sock)
    try:
        out = run_cli("serve", str(readme_tiny_engine), "--listen", f"unix:{sock}")
        assert_one_line_error(out, "a server is already listening there")
        first_inode = sock.stat().st_ino
        # Someone removes the path while `first` runs: a second server may claim it, and
        # `first` exiting must leave the second's socket alone (inode check).
        sock.unlink()
        second = start_server(readme_tiny_engine, sock)
        try:
            assert sock.stat().st_ino != first_inode
            stop(first)
            assert sock.exists() and sock.stat().st_ino != first_inode
        finally:
            stop(second)
        assert not sock.exists()                 # the owner removed its socket on exit
    finally:
        if first.poll() is None:
            first.kill()


def stale_socket(path: Path) -> None:
    """A socket file whose server is gone (bound, never listening, closed): connect refused."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def test_server_replaces_a_stale_socket(readme_tiny_engine, tmp_path):
    sock = tmp_path / "edge.sock"
    stale_socket(sock)
    stop(start_server(readme_tiny_engine, sock))
    assert not sock.exists()


def test_chat_past_a_stale_default_socket_runs_the_model_in_process(tmp_path):
    from gptoss_edge.runtime.frontends.grpc_server import default_socket_path

    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    stale_socket(Path(str(tmp_path)) / Path(default_socket_path()).name)
    out = run_cli("chat", "--max-tokens", "8", "--temperature", "0", "What does len do?",
                  env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "UNAVAILABLE" not in out.stderr and "[length:" in out.stderr


def test_bench_on_the_readme_tiny_engine(readme_tiny_engine):
    """The probe's crash: the model sampled an id the 489-id tokenizer lacks."""
    out = run_cli("bench", str(readme_tiny_engine), "--concurrency", "1,2", "--prompt-tokens",
                  "8", "--gen-tokens", "8", "--max-context", "256", "--max-step-tokens", "32")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("server")]
    assert len(rows) == 2 and "tokens=16" in rows[1], out.stdout
