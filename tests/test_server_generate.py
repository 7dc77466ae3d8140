"""Real server (TCP loopback and Unix socket) over the ONNX Runtime engine of a tiny checkpoint: streaming
Generate, continuous batching exactness, cancellation/deadline freeing slots, admission."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from conftest import ort_backend
from serving_helpers import ServerThread, generate_ids, model_info, run_parallel, wait_until


@pytest.fixture(scope="module")
def backend(tiny_engine):
    return ort_backend(tiny_engine, max_slots=16, max_context=512, max_step_tokens=32)


@pytest.fixture(scope="module", params=["tcp", "unix"])
def server(request, backend, tiny_tokenizer, tmp_path_factory):
    listen = ("127.0.0.1:0" if request.param == "tcp"
              else f"unix:{tmp_path_factory.mktemp('sock')}/edge.sock")
    st = ServerThread(backend, tiny_tokenizer, ServeOptions(listen=listen, model_name="tiny",
                                                            max_queue=32))
    yield st
    st.stop()


@pytest.fixture
def stub(server):
    with server.channel() as ch:
        yield llm_pb2_grpc.LLMStub(ch)


def prompts(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # lengths straddle the 32-token prefill chunk and the 128-token window
    return [rng.integers(9, vocab, int(rng.integers(3, 200))).tolist() for _ in range(n)]


def test_generate_streams_tokens_and_text(stub, tiny_tokenizer):
    responses = list(stub.Generate(pb.GenerateRequest(text="def add(a, b):", max_tokens=12,
                                                      logprobs=True, top_logprobs=3)))
    assert responses[-1].HasField("finish")
    body = responses[:-1]
    assert len(body) > 1                                     # streamed, not one final blob
    ids = [t for r in body for t in r.token_ids]
    assert len(ids) == 12
    finish = responses[-1].finish
    assert finish.reason == pb.FINISH_REASON_LENGTH
    assert finish.usage.completion_tokens == 12
    assert finish.usage.prompt_tokens == len(tiny_tokenizer.encode("def add(a, b):"))
    assert "".join(r.text for r in body) == tiny_tokenizer.decode(ids)
    for r in body:
        assert [lp.token_id for lp in r.logprobs] == list(r.token_ids)
        for lp in r.logprobs:
            assert len(lp.top) == 3 and lp.logprob <= 0.0
            assert lp.top[0].token_id == lp.token_id        # greedy takes the best token


def test_sixteen_concurrent_greedy_streams_match_alone(stub, server):
    ps = prompts(16, 480, seed=1)
    alone = [generate_ids(stub, p, 24)[0] for p in ps]
    together = run_parallel([lambda p=p: generate_ids(stub, p, 24)[0] for p in ps])
    assert together == alone
    assert all(len(t) == 24 for t in alone)
    assert wait_until(lambda: model_info(stub).kv_slots_used == 0)


def test_long_prompt_prefill_does_not_stall_running_stream(stub, backend, monkeypatch):
    """A 480-token prompt is prefilled in 32-token chunks while another stream decodes: chunk
    steps and decode steps alternate, so the running stream gets a token between any two
    chunks, and no step pads a decode row to a chunk's length."""
    steps = []                                      # per engine step: [(slot, n_tokens), ...]
    real_step = backend.step

    def logged_step(rows):
        steps.append([(r.slot, len(r.token_ids)) for r in rows])
        return real_step(rows)

    monkeypatch.setattr(backend, "step", logged_step)
    long = np.random.default_rng(6).integers(9, 480, 480).tolist()
    running = stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[9, 10, 11]),
                                               max_tokens=300))
    next(running)                                   # decoding now
    generate_ids(stub, long, 1)
    rest = list(running)
    assert rest[-1].finish.reason == pb.FINISH_REASON_LENGTH
    kinds = ["chunk" if any(n > 3 for _, n in st) else "decode" if st[0][1] == 1 else "other"
             for st in steps]
    chunk_at = [i for i, k in enumerate(kinds) if k == "chunk"]
    assert [n for i in chunk_at for _, n in steps[i]] == [32] * 15   # 480 = 15 chunks of 32
    assert all(len(set(n for _, n in st)) == 1 for st in steps)       # never mixed/padded
    assert all(kinds[i + 1] == "decode" for i in chunk_at[:-1])       # a token between chunks


def cancel_release_steps(server) -> tuple[float, float]:
    """(cancels seen, cancels whose slot was freed within one engine step)."""
    reg = server.server.model.metrics.registry
    total = reg.get_sample_value("gptoss_edge_cancel_release_steps_count") or 0.0
    within = reg.get_sample_value("gptoss_edge_cancel_release_steps_bucket", {"le": "1.0"}) or 0.0
    return total, within


def test_cancel_frees_slot_within_a_step(stub, server):
    before, _ = cancel_release_steps(server)
    call = stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[10, 11, 12]),
                                            max_tokens=400))
    next(call)
    assert model_info(stub).kv_slots_used == 1
    call.cancel()
    assert wait_until(lambda: model_info(stub).kv_slots_used == 0, timeout=5)
    total, within = cancel_release_steps(server)
    assert total == before + 1 and within == total      # freed at the next step boundary


def test_deadline_frees_slot(stub, server, backend, monkeypatch):
    real_step = backend.step

    def slow_step(rows):          # 5 ms steps: 400 tokens cannot beat the 0.3 s deadline
        time.sleep(0.005)
        return real_step(rows)

    monkeypatch.setattr(backend, "step", slow_step)
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[10, 11]),
                                                  max_tokens=400), timeout=0.3):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: model_info(stub).kv_slots_used == 0, timeout=5)
    total, within = cancel_release_steps(server)
    assert total >= 1 and within == total


def test_seeded_sampling_is_reproducible(stub):
    sampling = pb.SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234)
    a, _ = generate_ids(stub, [20, 21, 22], 16, sampling=sampling)
    b, _ = generate_ids(stub, [20, 21, 22], 16, sampling=sampling)
    c, _ = generate_ids(stub, [20, 21, 22], 16,
                        sampling=pb.SamplingParams(temperature=1.0, seed=99))
    assert a == b and a != c


def test_stop_string_and_stop_token(stub, tiny_tokenizer):
    ids, _ = generate_ids(stub, [30, 31, 32], 20)
    text = tiny_tokenizer.decode(ids)
    stop = text[len(text) // 2: len(text) // 2 + 2]
    resp = list(stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=[30, 31, 32]),
                                                 max_tokens=20, stop=[stop])))
    assert resp[-1].finish.reason == pb.FINISH_REASON_STOP
    assert "".join(r.text for r in resp) == text[:text.find(stop)]
    out, finish = generate_ids(stub, [30, 31, 32], 20, stop_token_ids=[ids[3]])
    assert finish.reason == pb.FINISH_REASON_STOP and out == ids[:ids.index(ids[3]) + 1]


def test_tokenize_detokenize_and_model_info(stub, tiny_tokenizer):
    ids = stub.Tokenize(pb.TokenizeRequest(text="hello <|start|> world")).token_ids
    assert list(ids) == tiny_tokenizer.encode("hello <|start|> world")
    assert stub.Detokenize(pb.DetokenizeRequest(token_ids=ids)).text == "hello <|start|> world"
    info = model_info(stub)
    assert (info.name, info.kv_slots_total, info.max_context) == ("tiny", 16, 512)
    assert info.kv_slots_free == 16 and info.max_step_tokens == 32
