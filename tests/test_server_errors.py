"""Every bad input gets its precise status while other streams run on untouched; admission
control (RESOURCE_EXHAUSTED); oversize messages; drain (health NOT_SERVING, UNAVAILABLE for new
calls, in-flight streams finish)."""
from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from conftest import ort_backend
from serving_helpers import ServerThread, generate_ids, model_info, run_parallel, wait_until

OK_PROMPT = [40, 41, 42, 43]


def make_server(engine, tokenizer, tmp_path, **options):
    backend = ort_backend(engine, max_slots=options.pop("slots", 4), max_context=256, max_step_tokens=32)
    return ServerThread(backend, tokenizer, ServeOptions(
        listen=f"unix:{tmp_path}/s.sock", model_name="tiny", **options))


@pytest.fixture(scope="module")
def server(tiny_engine, tiny_tokenizer, tmp_path_factory):
    st = make_server(tiny_engine, tiny_tokenizer, tmp_path_factory.mktemp("err"), slots=8,
                     max_message_bytes=64 * 1024)
    yield st
    st.stop()


def gen(**kw) -> pb.GenerateRequest:
    kw.setdefault("tokens", pb.TokenIds(ids=OK_PROMPT))
    return pb.GenerateRequest(**kw)


BAD_GENERATE = [
    (gen(model="other"), grpc.StatusCode.NOT_FOUND, "'other'"),
    (pb.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "prompt: set"),
    (gen(tokens=pb.TokenIds(ids=[])), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    (gen(tokens=pb.TokenIds(ids=[5, 100000])), grpc.StatusCode.INVALID_ARGUMENT, "100000"),
    (gen(tokens=pb.TokenIds(ids=[7] * 300)), grpc.StatusCode.INVALID_ARGUMENT,
     "prompt is 300 tokens; the context holds 256"),
    (gen(sampling=pb.SamplingParams(temperature=-0.5)), grpc.StatusCode.INVALID_ARGUMENT,
     "temperature"),
    (gen(sampling=pb.SamplingParams(top_p=1.5)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    (gen(sampling=pb.SamplingParams(top_k=-3)), grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    (gen(sampling=pb.SamplingParams(temperature=float("nan"))),
     grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    (gen(stop_token_ids=[-1]), grpc.StatusCode.INVALID_ARGUMENT, "stop_token_ids"),
    (pb.GenerateRequest(text="x" * 100_000), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),  # > 64 KiB
]


def test_bad_inputs_get_precise_status_and_leave_streams_untouched(server):
    with server.channel() as ch:
        stub = llm_pb2_grpc.LLMStub(ch)
        expected, _ = generate_ids(stub, OK_PROMPT, 60)
        results = {}

        def good(i):
            results[i] = generate_ids(stub, OK_PROMPT, 60)[0]

        def bad(req):
            with pytest.raises(grpc.RpcError) as err:
                got = list(stub.Generate(req))
                pytest.fail(f"{req} was accepted: {got[-1]}")
            return err.value

        threads = [threading.Thread(target=good, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        errors = run_parallel([lambda r=r: bad(r) for r, _, _ in BAD_GENERATE])
        for t in threads:
            t.join()
        for err, (req, code, fragment) in zip(errors, BAD_GENERATE):
            assert err.code() == code, (req, err.details())
            assert fragment in (err.details() or ""), err.details()
        assert [results[i] for i in range(3)] == [expected] * 3
        assert wait_until(lambda: model_info(stub).kv_slots_used == 0)


def test_queue_full_is_resource_exhausted(tiny_engine, tiny_tokenizer, tmp_path):
    st = make_server(tiny_engine, tiny_tokenizer, tmp_path, slots=1, max_queue=1)
    try:
        with st.channel() as ch:
            stub = llm_pb2_grpc.LLMStub(ch)
            running = stub.Generate(gen(max_tokens=200))
            next(running)                                     # holds the only slot
            queued = stub.Generate(gen(max_tokens=2))         # waits in the queue
            assert wait_until(lambda: model_info(stub).queue_depth == 1)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(gen(max_tokens=2)))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "all 1 KV slots are busy" in err.value.details()
            running.cancel()
            assert list(queued)[-1].finish.reason == pb.FINISH_REASON_LENGTH
    finally:
        st.stop()


def test_drain_finishes_in_flight_and_refuses_new(tiny_engine, tiny_tokenizer, tmp_path):
    st = make_server(tiny_engine, tiny_tokenizer, tmp_path, slots=2)
    ch = st.channel()
    stub = llm_pb2_grpc.LLMStub(ch)
    health = health_pb2_grpc.HealthStub(ch)
    assert health.Check(health_pb2.HealthCheckRequest()).status == \
        health_pb2.HealthCheckResponse.SERVING
    in_flight = stub.Generate(gen(max_tokens=80))
    first = next(in_flight)
    fut = asyncio.run_coroutine_threadsafe(st.server.drain(grace_s=30), st.loop)
    assert wait_until(lambda: st.server.model.draining)
    assert health.Check(health_pb2.HealthCheckRequest()).status == \
        health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(gen(max_tokens=2)))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    rest = list(in_flight)                                    # the in-flight stream completes
    assert len(first.token_ids) + sum(len(r.token_ids) for r in rest) == 80
    assert rest[-1].finish.reason == pb.FINISH_REASON_LENGTH
    fut.result(30)
    ch.close()
    st.stop()
