"""The CLI as users run it: `gptoss-edge serve` in its own process (SIGTERM drains it), and
`gptoss-edge chat` streaming a scripted harmony turn to the terminal."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from scripted_backend import ScriptedBackend
from serving_helpers import ServerThread, wait_until

CLI = [sys.executable, "-m", "gptoss_edge.cli"]


def test_serve_process_drains_on_sigterm(tiny_engine, tmp_path):
    sock = tmp_path / "edge.sock"
    proc = subprocess.Popen(CLI + ["serve", str(tiny_engine), "--listen", f"unix:{sock}",
                                   "--max-slots", "2", "--max-context", "512",
                                   "--max-step-tokens", "32", "--drain-grace", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert "serving 'tiny' (onnxruntime)" in banner and "2 KV slots x 512" in banner, \
            banner + proc.stderr.read()
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = llm_pb2_grpc.LLMStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            assert health.Check(health_pb2.HealthCheckRequest()).status == \
                health_pb2.HealthCheckResponse.SERVING
            got = []
            call = stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[5, 6, 7]),
                                                    max_tokens=300))
            reader = threading.Thread(target=lambda: got.extend(call))
            reader.start()
            assert wait_until(lambda: len(got) >= 2)
            proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: health.Check(health_pb2.HealthCheckRequest()).status
                              == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=5)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[5]),
                                                      max_tokens=2)))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            reader.join(60)
        assert got[-1].finish.reason == pb.FINISH_REASON_LENGTH          # in-flight finished
        assert sum(len(r.token_ids) for r in got) == 300
        assert proc.wait(30) == 0
        assert "drained" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SCRIPTS = {
    "KEY_CLI": "<|channel|>analysis<|message|>Think briefly.<|end|><|start|>assistant"
               "<|channel|>final<|message|>The answer is 42.<|return|>",
    "KEY_CALL": "<|channel|>commentary to=functions.lookup_signature <|constrain|>json"
                "<|message|>{\"name\": \"len\"}<|call|>",
}


@pytest.fixture(scope="module")
def scripted_server(tiny_tokenizer, tmp_path_factory):
    sock = tmp_path_factory.mktemp("cli") / "s.sock"
    st = ServerThread(ScriptedBackend(tiny_tokenizer, SCRIPTS), tiny_tokenizer,
                      ServeOptions(listen=f"unix:{sock}", model_name="scripted"))
    yield st
    st.stop()


def run_chat(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["chat", "--server", address, *args], capture_output=True,
                          text=True, timeout=60)


def test_chat_cli_separates_reasoning_from_answer(scripted_server):
    out = run_chat(scripted_server.address, "KEY_CLI what is it?")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "The answer is 42."
    assert "[reasoning] Think briefly." in out.stderr
    assert "[stop:" in out.stderr


def test_chat_cli_prints_tool_calls_structured(scripted_server, tmp_path):
    tool = tmp_path / "tool.json"
    tool.write_text(json.dumps({"name": "lookup_signature", "description": "signature",
                                "parameters": {"type": "object",
                                               "properties": {"name": {"type": "string"}}}}))
    out = run_chat(scripted_server.address, "--tool", str(tool), "KEY_CALL len?")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"tool_call": {"name": "lookup_signature",
                                                    "arguments": {"name": "len"}}}
    assert "[tool_calls:" in out.stderr


def test_chat_cli_reports_status(scripted_server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "f", "parameters": {"type": "string"}}))
    out = run_chat(scripted_server.address, "--tool", str(bad), "KEY_CLI x")
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr


def test_bench_cli_reports_figures(tiny_engine):
    out = subprocess.run(CLI + ["bench", str(tiny_engine), "--concurrency", "1,2",
                                "--prompt-tokens", "8", "--gen-tokens", "4", "--max-context",
                                "256", "--max-step-tokens", "32"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("server")]
    assert len(rows) == 2 and "c=2" in rows[1] and "tokens=8" in rows[1]
    assert "peak RSS" in out.stdout


def test_private_socket_folder_is_removed():
    from gptoss_edge.runtime.clients.dial import private_socket
    with private_socket("gptoss-edge-test-") as address:
        folder = Path(address.removeprefix("unix:")).parent
        assert address.startswith("unix:") and folder.is_dir()
        (folder / "s.sock").write_text("")           # what a server leaves behind
    assert not folder.exists()
