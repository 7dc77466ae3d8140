"""One generation loop and one sampler: `gptoss-edge generate` runs through the server's
scheduler and sampler, so a seeded CLI run and a seeded server request give the same tokens."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gptoss_edge.runtime.frontends.grpc_server import ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc
from conftest import ort_backend
from serving_helpers import ServerThread, generate_ids

PROMPT = [40, 41, 42, 43, 44, 45, 46, 47] * 5
LIMITS = dict(max_context=256, max_step_tokens=32)


@pytest.fixture(scope="module")
def server(tiny_engine, tiny_tokenizer, tmp_path_factory):
    sock = tmp_path_factory.mktemp("loop") / "s.sock"
    st = ServerThread(ort_backend(tiny_engine, max_slots=2, **LIMITS), tiny_tokenizer,
                      ServeOptions(listen=f"unix:{sock}", model_name="tiny"))
    yield st
    st.stop()


def cli_tokens(engine, n: int, *flags: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-m", "gptoss_edge.cli", "generate", str(engine), "--prompt-ids",
         ",".join(map(str, PROMPT)), "--max-new-tokens", str(n), "--max-context",
         str(LIMITS["max_context"]), "--max-step-tokens", str(LIMITS["max_step_tokens"]),
         "--threads", "1", "--json", *flags], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["token_ids"]


@pytest.mark.parametrize("temperature, top_p, top_k, seed", [
    (1.0, 1.0, 0, 7),        # plain softmax sampling over the whole vocabulary
    (0.75, 0.9, 40, 123),    # top-k then top-p
])
def test_seeded_cli_run_equals_seeded_server_run(server, tiny_engine, temperature, top_p,
                                                 top_k, seed):
    n = 24
    cli = cli_tokens(tiny_engine, n, "--temperature", str(temperature), "--top-p", str(top_p),
                     "--top-k", str(top_k), "--seed", str(seed))
    sampling = pb.SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    with server.channel() as ch:
        served, _ = generate_ids(llm_pb2_grpc.LLMStub(ch), PROMPT, n, sampling=sampling)
    assert served == cli
    # The sampling is real: another seed gives another sequence (random weights, T >= 0.75:
    # 24 draws from a spread-out distribution agreeing everywhere is vanishingly unlikely).
    other = cli_tokens(tiny_engine, n, "--temperature", str(temperature), "--top-p",
                       str(top_p), "--top-k", str(top_k), "--seed", str(seed + 1))
    assert other != cli


def test_greedy_cli_dump_holds_the_logits_of_every_position(tiny_engine, tmp_path):
    import numpy as np
    dump = tmp_path / "logits.npy"
    tokens = cli_tokens(tiny_engine, 5, "--dump-logits", str(dump), "--ignore-eos")
    logits = np.load(dump)
    assert logits.shape[0] == len(PROMPT) + len(tokens) == len(PROMPT) + 5
    assert tokens == [int(t) for t in logits[len(PROMPT) - 1:-1].argmax(-1)]
