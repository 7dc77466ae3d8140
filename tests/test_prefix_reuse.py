"""Prefix KV reuse is exact: a slot cut back to a saved prefix continues with the logits a
fresh slot prefilled with the same tokens gives. Prompts are longer than the 128-token window
and the slot runs far past the saved point before it is cut (window buffers overwritten), so
a wrong window state could not go unseen."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gptoss_edge.compiler.config import preset
from gptoss_edge.runtime.engine.backend import BackendError, StepRow
from gptoss_edge.runtime.engine.prefix import (SavedPrefixes, choose_slot, chunk_limit,
                                               common_prefix, save_points, truncation)
from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams
from gptoss_edge.runtime.engine.scheduler import Scheduler, SeqRequest
from conftest import ort_backend

CHUNK = 64


def test_prefix_bookkeeping():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2 and common_prefix([], [1]) == 0
    assert choose_slot([1, 2, 3], [4, 5], {4: [1, 9], 5: [1, 2, 3, 4]}) == (5, 2)
    assert choose_slot([1, 2], [4, 5], {}) == (4, 0)
    assert save_points(0, 64, 300, stride=128) is False and save_points(64, 128, 300, stride=128)
    assert save_points(256, 300, 300, stride=128) and chunk_limit(100, stride=128) == 28
    saved = SavedPrefixes(limit=3)
    for n in (128, 150, 256, 300):
        saved.add(0, n, n)
    assert saved.best(0, 299) == (256, 256)            # 150 (second-lowest) was dropped
    assert truncation(saved, 0, 140, 400) == (128, 128) and saved.count(0) == 1
    assert truncation(saved, 0, 400, 400) == (400, None)
    with pytest.raises(ValueError, match="cannot keep 401"):
        truncation(saved, 0, 401, 400)


def prefill(backend, slot: int, tokens: list[int]) -> None:
    for i in range(0, len(tokens), CHUNK):
        backend.step([StepRow(slot, tokens[i:i + CHUNK])])


@pytest.fixture(scope="module")
def trt_engine(tmp_path_factory):
    """TensorRT-target engine (fp32) of the tiny preset, run by the numpy reference backend."""
    from gptoss_edge.cli import main
    from gptoss_edge.compiler.synthetic import write_checkpoint

    root = tmp_path_factory.mktemp("prefix-trt")
    write_checkpoint(root / "ckpt", preset("tiny"), "hf", 7)
    assert main(["compile", str(root / "ckpt"), "-o", str(root / "engine"), "--target",
                 "tensorrt", "--precision", "fp32", "--max-positions", "1024", "--max-batch",
                 "2", "--max-step-tokens", str(CHUNK), "--no-progress"]) == 0
    return root / "engine"


def open_backend(kind: str, request):
    """ONNX Runtime on the tiny engine, or the numpy reference backend on the TensorRT graph."""
    if kind == "onnxruntime":
        return ort_backend(request.getfixturevalue("tiny_engine"), max_slots=2, max_context=900,
                           max_step_tokens=CHUNK)
    from gptoss_edge.runtime.engine.reference_backend import ReferenceBackend
    return ReferenceBackend(request.getfixturevalue("trt_engine"), max_slots=2, max_context=900,
                            max_step_tokens=CHUNK)


@pytest.mark.parametrize("kind", ["onnxruntime", "reference"])
def test_truncate_to_a_saved_prefix_equals_a_fresh_prefill(kind, request):
    backend = open_backend(kind, request)
    vocab = backend.info.config.vocab_size
    rng = np.random.default_rng(1)
    shared = rng.integers(0, vocab, 192).tolist()        # > window: rings wrapped once
    onward = rng.integers(0, vocab, 160).tolist()        # what the slot ran on to (wraps again)
    suffix = rng.integers(0, vocab, 40).tolist()         # the later request's own tokens
    prefill(backend, 0, shared)
    backend.save_prefix(0)
    prefill(backend, 0, onward)
    assert backend.truncate(0, 192 + 7) == 192           # the longest exact prefix below
    reused = backend.step([StepRow(0, suffix, all_logits=True)])[0]
    prefill(backend, 1, shared)
    fresh = backend.step([StepRow(1, suffix, all_logits=True)])[0]
    # Same kernels, same shapes, same inputs: the restored slot must be bit for bit the state
    # a fresh prefill builds, so the tolerance is zero.
    np.testing.assert_array_equal(reused, fresh)
    # Nothing saved below 150 in slot 1: it can only start over; saves above the cut are gone.
    assert backend.truncate(1, 150) == 0 and backend.truncate(0, 100) == 0
    with pytest.raises(BackendError, match="cannot keep"):
        backend.truncate(1, 5)
    backend.close()


def run_turns(backend, prompts_of, reuse: bool, stride: int = 128):
    """Requests one after another through a Scheduler (greedy; 140 new tokens for the first two:
    the window rings wrap past the saved prompt end); prompts_of(previous outputs) yields each
    next prompt. -> (per request [(token, logprob)], reused prompt tokens)."""
    async def main():
        sched = Scheduler(backend, 2, prefix_reuse=reuse, reuse_stride=stride)
        sched.start()
        outs = []
        for prompt in prompts_of(outs):
            stream = sched.submit(SeqRequest(prompt, Sampler(SamplingParams(temperature=0.0)),
                                             140 if len(outs) < 2 else 20))
            outs.append([(ev.token_id, ev.logprob) async for ev in stream])
        reused = sched.reused_tokens
        await sched.close()
        return outs, reused
    return asyncio.run(main())


def assert_same_generations(got, want):
    """Reuse prefills fewer tokens in different chunks, so float32 sums run in another order
    (MatMul over other row counts): logits ~10 agree to ~1e-5; logprobs compared at 1e-4, and
    the greedy tokens must be identical."""
    for g, w in zip(got, want, strict=True):
        assert [t for t, _ in g] == [t for t, _ in w]
        np.testing.assert_allclose([lp for _, lp in g], [lp for _, lp in w], atol=1e-4)


def test_multi_turn_chat_reuses_each_turns_prompt(tiny_engine):
    vocab = 489                                # the tiny_engine fixture: vocab sized to its BPE
    rng = np.random.default_rng(5)
    system = rng.integers(0, vocab, 200).tolist()
    users = [rng.integers(0, vocab, 25).tolist() for _ in range(3)]

    def prompts(outs):
        prompt = system + users[0]
        yield prompt
        for k in (1, 2):           # the reply re-rendered (as harmony does: it starts differently)
            reply = [t for t, _ in outs[-1]]
            prompt = prompt + [(reply[0] + 1) % vocab] + reply[1:] + users[k]
            yield prompt

    backend = ort_backend(tiny_engine, max_slots=2, max_context=900, max_step_tokens=CHUNK)
    with_reuse, reused = run_turns(backend, prompts, True)
    backend2 = ort_backend(tiny_engine, max_slots=2, max_context=900, max_step_tokens=CHUNK)
    without, none = run_turns(backend2, prompts, False)
    assert none == 0 and reused == 225 + (225 + 140 + 25)    # each turn's whole prompt before it
    assert_same_generations(with_reuse, without)


def test_requests_sharing_a_system_prompt_reuse_it_up_to_a_saved_point(tiny_engine):
    vocab = 489                                # the tiny_engine fixture: vocab sized to its BPE
    rng = np.random.default_rng(6)
    system = rng.integers(0, vocab, 300).tolist()
    a, b = rng.integers(0, vocab, 30).tolist(), rng.integers(0, vocab, 30).tolist()
    prompts = lambda outs: iter([system + a, system + b])        # noqa: E731
    backend = ort_backend(tiny_engine, max_slots=2, max_context=900, max_step_tokens=CHUNK)
    with_reuse, reused = run_turns(backend, prompts, True)
    without, _ = run_turns(ort_backend(tiny_engine, max_slots=2, max_context=900,
                                       max_step_tokens=CHUNK), prompts, False)
    assert reused == 256                 # saves at 128, 256 (stride) and 330 (a's prompt end)
    assert_same_generations(with_reuse, without)


def chat_turns(server, turns: int = 3):
    """A real multi-turn Chat (harmony rendering) on the default model, greedy; -> replies."""
    from gptoss_edge.v1 import llm_pb2 as pb
    from gptoss_edge.v1 import llm_pb2_grpc

    messages = [pb.Message(role=pb.ROLE_DEVELOPER,
                           content="Answer questions about Python's standard library. " * 12)]
    replies = []
    with server.channel() as ch:
        stub = llm_pb2_grpc.LLMStub(ch)
        for q in ["What does json.dumps do?", "And json.loads?", "What about os.path.join?"][:turns]:
            messages.append(pb.Message(role=pb.ROLE_USER, content=q))
            out = list(stub.Chat(pb.ChatRequest(messages=messages, max_tokens=40,
                                                sampling=pb.SamplingParams(temperature=0.0))))
            reply = "".join(r.content for r in out)
            replies.append((reply, "".join(r.reasoning for r in out), out[-1].finish.usage))
            messages.append(pb.Message(role=pb.ROLE_ASSISTANT, content=reply or "(no answer)"))
    return replies


def test_follow_up_chat_turns_reuse_the_conversation_and_answer_the_same():
    from gptoss_edge.runtime.engine.opener import EngineLimits, open_engine
    from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
    from serving_helpers import ServerThread

    results = {}
    for reuse in (True, False):
        engine = open_engine(None, EngineLimits(max_slots=2, max_context=2048))
        server = ServerThread(engine.backend, engine.tokenizer,
                              ServeOptions(listen="127.0.0.1:0", prefix_reuse=reuse))
        try:
            results[reuse] = (chat_turns(server), server.server.model.scheduler.reused_tokens)
        finally:
            server.stop()
            engine.backend.close()
    (with_reuse, reused), (without, none) = results[True], results[False]
    assert [r[:2] for r in with_reuse] == [r[:2] for r in without]   # same greedy text
    first, second = with_reuse[0][2].prompt_tokens, with_reuse[1][2].prompt_tokens
    assert none == 0 and reused >= first + second     # turns 2 and 3 started past their history
