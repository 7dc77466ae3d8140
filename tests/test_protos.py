"""The checked-in stubs are exactly what protos/generate.py makes from protos/*.proto."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "protos/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checked_in_stubs_match_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    gen = _generator()
    gen.generate(tmp_path)
    stale = [name for name in gen.stub_names()
             if (tmp_path / name).read_bytes() != (ROOT / name).read_bytes()]
    assert not stale, f"regenerate with `python protos/generate.py`: {stale} differ"


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
