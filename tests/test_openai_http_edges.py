"""The HTTP front end's edges on a real server (scripted harmony model, tests/scripted_backend.py):
a client that goes away mid-reply frees its KV slot within one engine step (streamed and not),
malformed model output ends only its own reply, bearer token + TLS as on gRPC, oversized bodies,
draining."""
from __future__ import annotations

import json
import ssl
import subprocess

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

from gptoss_edge.runtime.frontends.grpc_server import ServeOptions  # noqa: E402
from scripted_backend import ScriptedBackend  # noqa: E402
from serving_helpers import ServerThread, run_parallel, wait_until  # noqa: E402

SCRIPTS = {
    "KEY_LONG": "<|channel|>final<|message|>" + "word " * 300 + "<|return|>",
    "KEY_BROKEN": "<|channel|>final<|message|>fine so far<|start|>oops<|return|>",
    "KEY_OK": "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final"
              "<|message|>Done.<|return|>",
}


def start(tokenizer, tmp_path, **options) -> ServerThread:
    backend = ScriptedBackend(tokenizer, SCRIPTS, max_slots=2, max_context=1024,
                              step_delay=options.pop("step_delay", 0.0))
    return ServerThread(backend, tokenizer, ServeOptions(
        listen=f"unix:{tmp_path}/s.sock", model_name="scripted", http="127.0.0.1:0", **options))


@pytest.fixture(scope="module")
def slow(tiny_tokenizer, tmp_path_factory):
    st = start(tiny_tokenizer, tmp_path_factory.mktemp("slow"), step_delay=0.01,
               max_message_bytes=64 * 1024)
    yield st
    st.stop()


def client_of(st: ServerThread, **kw) -> "openai.OpenAI":
    return openai.OpenAI(base_url=st.server.http.address + "/v1", max_retries=0,
                         **{"api_key": "unused", **kw})


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def slots_used(st: ServerThread) -> int:
    return st.server.model.scheduler.slots.used


def cancel_release_steps(st: ServerThread) -> tuple[float, float]:
    """(count, sum) of the cancel -> slot release histogram, in engine steps."""
    h = st.server.model.metrics.cancel_release_steps
    samples = {s.name: s.value for m in h.collect() for s in m.samples}
    return (samples["gptoss_edge_cancel_release_steps_count"],
            samples["gptoss_edge_cancel_release_steps_sum"])


def test_stream_disconnect_frees_the_slot_within_one_step(slow):
    count0, sum0 = cancel_release_steps(slow)
    stream = client_of(slow).chat.completions.create(model="scripted", messages=user("KEY_LONG"),
                                                     stream=True)
    seen = 0
    for _chunk in stream:
        seen += 1
        if seen == 5:
            break
    assert slots_used(slow) == 1
    stream.close()                                  # the client goes away mid-reply
    assert wait_until(lambda: slots_used(slow) == 0)
    count, total = cancel_release_steps(slow)
    assert count == count0 + 1 and total - sum0 <= 1


def test_unstreamed_disconnect_frees_the_slot_within_one_step(slow):
    count0, sum0 = cancel_release_steps(slow)
    impatient = client_of(slow, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):     # 300 words x 10 ms: far longer than 0.3 s
        impatient.chat.completions.create(model="scripted", messages=user("KEY_LONG"))
    assert wait_until(lambda: slots_used(slow) == 0)
    count, total = cancel_release_steps(slow)
    assert count == count0 + 1 and total - sum0 <= 1


def test_malformed_output_ends_only_its_own_reply(slow):
    client = client_of(slow)

    def broken_stream():
        with pytest.raises(openai.APIError) as err:
            list(client.chat.completions.create(model="scripted", messages=user("KEY_BROKEN"),
                                                stream=True))
        return str(err.value)

    def broken_whole():
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="scripted", messages=user("KEY_BROKEN"))
        return err.value.body

    def good():
        return client.chat.completions.create(model="scripted", messages=user("KEY_OK"))

    streamed, whole, ok = run_parallel([broken_stream, broken_whole, good])
    assert "not valid harmony" in streamed
    assert "not valid harmony" in whole["message"] and whole["type"] == "server_error"
    assert ok.choices[0].message.content == "Done."
    assert ok.choices[0].message.reasoning_content == "Easy."
    assert wait_until(lambda: slots_used(slow) == 0)


def test_oversized_body_is_413(slow):
    r = httpx.post(slow.server.http.address + "/v1/chat/completions",
                   content=json.dumps({"messages": user("x" * 100_000)}).encode())
    assert r.status_code == 413 and "larger than 65536 bytes" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def test_bearer_token_and_tls_as_on_grpc(tiny_tokenizer, tmp_path, tls_files):
    cert, key = tls_files
    trust = ssl.create_default_context(cafile=str(cert))
    st = start(tiny_tokenizer, tmp_path, tls_cert=cert, tls_key=key, auth_token="s3cret")
    try:
        base = st.server.http.address.replace("127.0.0.1", "localhost")
        assert base.startswith("https://")

        def client(token):
            return openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0,
                                 http_client=openai.DefaultHttpxClient(verify=trust))

        with pytest.raises(openai.AuthenticationError) as err:
            client("wrong").models.list()
        assert err.value.body["type"] == "authentication_error"
        reply = client("s3cret").chat.completions.create(model="scripted",
                                                         messages=user("KEY_OK"))
        assert reply.choices[0].message.content == "Done."
        probe = httpx.get(base + "/health", verify=trust)     # probes carry no token
        assert probe.status_code == 200
        with pytest.raises(httpx.TransportError):                 # no plain HTTP on that port
            httpx.get(base.replace("https://", "http://") + "/health", timeout=5).raise_for_status()
    finally:
        st.stop()


def test_draining_answers_503(tiny_tokenizer, tmp_path):
    st = start(tiny_tokenizer, tmp_path)
    try:
        client = client_of(st)
        assert client.chat.completions.create(model="scripted", messages=user("KEY_OK"))
        st.server.model.draining = True         # what drain() sets first
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="scripted", messages=user("KEY_OK"))
        assert err.value.status_code == 503 and "draining" in err.value.body["message"]
        assert httpx.get(st.server.http.address + "/health").status_code == 503
    finally:
        st.stop()


def test_drain_stops_the_http_listener(tiny_tokenizer, tmp_path):
    st = start(tiny_tokenizer, tmp_path)
    address = st.server.http.address
    st.run(st.server.drain(grace_s=5))
    with pytest.raises(httpx.ConnectError):
        httpx.get(address + "/health", timeout=5)
    st.stop()


def test_logprobs_in_openai_shape(slow, tiny_tokenizer):
    reply = client_of(slow).chat.completions.create(model="scripted", messages=user("KEY_OK"),
                                                    logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token for t in content)
    assert b"".join(bytes(t.bytes) for t in content).decode().endswith("Done.<|return|>")
