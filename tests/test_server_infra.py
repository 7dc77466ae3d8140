"""Standard tooling against a real server: grpc.health.v1, server reflection, a generic
KServe v2 client built only from reflection (no gptoss-edge stubs), Prometheus metrics, and
TCP with TLS + bearer token."""
from __future__ import annotations

import shutil
import struct
import subprocess
import urllib.request

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase)

from gptoss_edge.runtime.clients.dial import open_channel
from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from conftest import ort_backend
from serving_helpers import ServerThread, generate_ids


@pytest.fixture(scope="module")
def backend(tiny_engine):
    return ort_backend(tiny_engine, max_slots=4, max_context=256, max_step_tokens=32)


@pytest.fixture(scope="module")
def server(backend, tiny_tokenizer):
    st = ServerThread(backend, tiny_tokenizer, ServeOptions(listen="127.0.0.1:0",
                                                            model_name="tiny", metrics_port=0))
    yield st
    st.stop()


def test_health_probe(server):
    with server.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "gptoss_edge.v1.LLM", "inference.GRPCInferenceService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(server):
    with server.channel() as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
    assert {"gptoss_edge.v1.LLM", "inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services


def _reflected_class(pool, name):
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_generic_kserve_client_via_reflection(server, tiny_tokenizer):
    """A client that knows only the KServe v2 names: message types come from reflection."""
    with server.channel() as ch:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
        Request = _reflected_class(pool, "inference.ModelInferRequest")
        Response = _reflected_class(pool, "inference.ModelStreamInferResponse")
        stream_infer = ch.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                        request_serializer=Request.SerializeToString,
                                        response_deserializer=Response.FromString)

        def request(text: str, max_tokens: int, stream: bool):
            req = Request(model_name="tiny", id=f"r{max_tokens}")
            for name, dtype in (("text_input", "BYTES"), ("max_tokens", "INT32"),
                                ("stream", "BOOL")):
                req.inputs.add(name=name, datatype=dtype, shape=[1])
            req.raw_input_contents.extend([_bytes_tensor([text.encode()]),
                                           struct.pack("<i", max_tokens), bytes([stream])])
            return req

        replies = list(stream_infer(iter([request("def f(x):", 6, True),
                                          request("def f(x):", 6, False),
                                          Request(model_name="missing")])))
    chunks = [r for r in replies if r.infer_response.id == "r6"]
    assert len(chunks) == 7                       # 6 streamed chunks + 1 whole-text reply
    texts = [_decode_text(r.infer_response) for r in chunks]
    assert "".join(texts[:6]) == texts[6]
    assert [r.infer_response.parameters["triton_final_response"].bool_param
            for r in chunks[:6]] == [False] * 5 + [True]
    assert replies[-1].error_message.startswith("NOT_FOUND")
    # the same text as the typed API gives for the same prompt (greedy)
    with server.channel() as ch:
        ids, _ = generate_ids(llm_pb2_grpc.LLMStub(ch), tiny_tokenizer.encode("def f(x):"), 6)
    assert texts[6] == tiny_tokenizer.decode(ids)
    # unary ModelInfer with typed (non-raw) tensor contents, as HTTP-less clients send it
    with server.channel() as ch:
        Unary = _reflected_class(pool, "inference.ModelInferResponse")
        infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=Request.SerializeToString,
                               response_deserializer=Unary.FromString)
        req = Request(model_name="tiny")
        req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents \
            .bytes_contents.append(b"def f(x):")
        req.inputs.add(name="max_tokens", datatype="INT32", shape=[1]).contents \
            .int_contents.append(6)
        assert _decode_text(infer(req)) == texts[6]


def _decode_text(resp) -> str:
    (raw,) = resp.raw_output_contents
    (n,) = struct.unpack_from("<I", raw)
    return raw[4:4 + n].decode()


def test_metrics_endpoint(server):
    with server.channel() as ch:
        generate_ids(llm_pb2_grpc.LLMStub(ch), [50, 51, 52], 5)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics",
                                  timeout=5).read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["gptoss_edge_time_to_first_token_seconds_count"] >= 1
    assert values["gptoss_edge_inter_token_latency_seconds_count"] >= 4
    assert values["gptoss_edge_queue_time_seconds_count"] >= 1
    assert values["gptoss_edge_generated_tokens_total"] >= 5
    assert values["gptoss_edge_kv_slots_total"] == 4
    assert "gptoss_edge_kv_cache_usage_ratio" in values
    assert "gptoss_edge_tokens_per_second" in values


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def test_tls_with_bearer_token(backend, tiny_tokenizer, tls_files):
    cert, key = tls_files
    st = ServerThread(backend, tiny_tokenizer, ServeOptions(
        listen="localhost:0", model_name="tiny", tls_cert=cert, tls_key=key,
        auth_token="s3cret"))
    try:
        async def call(token):
            async with open_channel(st.address, tls_ca=cert, token=token) as ch:
                return await llm_pb2_grpc.LLMStub(ch).ModelInfo(pb.ModelInfoRequest())

        assert st.run(call("s3cret")).name == "tiny"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            st.run(call("wrong"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            st.run(call(None))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        async def health():          # probes need no token
            async with open_channel(st.address, tls_ca=cert) as ch:
                return await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert st.run(health()).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        st.stop()
