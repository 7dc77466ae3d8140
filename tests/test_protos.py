"""The checked-in stubs are exactly what protos/generate.py makes from protos/*.proto."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "protos/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Version stamps the generators write: which grpcio-tools / protoc made the file (and hence the
# oldest runtime it accepts). A newer grpcio-tools on PyPI changes only these lines.
STAMPS = (re.compile(r"^GRPC_GENERATED_VERSION = '([\d.]+)'$", re.M),
          re.compile(r"^# Protobuf Python Version: ([\d.]+)$", re.M),
          re.compile(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),"))


def _unstamped(text: str) -> str:
    for stamp in STAMPS:
        text = stamp.sub("<stamp>", text)
    return text


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_checked_in_stubs_match_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    gen = _generator()
    gen.generate(tmp_path)
    stale = [name for name in gen.stub_names()
             if _unstamped((tmp_path / name).read_text()) != _unstamped((ROOT / name).read_text())]
    assert not stale, f"regenerate with `python protos/generate.py`: {stale} differ"


def test_declared_runtime_floors_accept_the_checked_in_stubs():
    """The stubs refuse a grpcio / protobuf older than the generator that wrote them, so the
    package's dependency floors must be at least those versions."""
    declared = re.findall(r'"([\w-]+)>=([\d.]+)', (ROOT / "pyproject.toml").read_text())
    floor = {name: _version(v) for name, v in declared}
    for name in _generator().stub_names():
        text = (ROOT / name).read_text()
        if m := STAMPS[0].search(text):
            assert floor["grpcio"] >= _version(m.group(1)), f"{name} needs grpcio>={m.group(1)}"
        if m := STAMPS[2].search(text):
            assert floor["protobuf"] >= tuple(int(x) for x in m.groups()), f"{name} needs protobuf>={m.groups()}"


def test_kserve_wire_names():
    """Package, service and field numbers as in the KServe v2 / Triton protocol."""
    from gptoss_edge.kserve import grpc_service_pb2 as k

    svc = k.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert svc.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in svc.methods} >= {"ServerLive", "ServerReady", "ModelReady",
                                             "ServerMetadata", "ModelMetadata", "ModelInfer",
                                             "ModelStreamInfer"}
    stream = svc.methods_by_name["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    numbers = {f.name: f.number for f in k.ModelInferRequest.DESCRIPTOR.fields}
    assert numbers == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                       "inputs": 5, "outputs": 6, "raw_input_contents": 7}
    numbers = {f.name: f.number for f in k.ModelStreamInferResponse.DESCRIPTOR.fields}
    assert numbers == {"error_message": 1, "infer_response": 2}
    numbers = {f.name: f.number for f in k.InferTensorContents.DESCRIPTOR.fields}
    assert numbers["bytes_contents"] == 8 and numbers["fp32_contents"] == 6
