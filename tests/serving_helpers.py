"""Test helpers (not shipped): a real gptoss-edge server running on its own event loop in a
background thread, so tests talk to it with ordinary blocking gRPC clients from any thread."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import grpc

from gptoss_edge.runtime.frontends.grpc_server import Server, ServeOptions
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc


class ServerThread:
    def __init__(self, backend, tokenizer, options: ServeOptions):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="test-server")
        self._thread.start()
        self.server: Server = self.run(Server.start(backend, tokenizer, options))
        self.address = self.server.address

    def run(self, coro, timeout: float = 60):
        """Run a coroutine on the server's loop; returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn, *args):
        self.loop.call_soon_threadsafe(fn, *args)

    def channel(self, **options) -> grpc.Channel:
        opts = list(options.items())
        return grpc.insecure_channel(self.address, options=opts)

    def stop(self) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def generate_ids(stub: llm_pb2_grpc.LLMStub, prompt: list[int], max_tokens: int,
                 **kw) -> tuple[list[int], pb.Finish]:
    """Blocking Generate; -> (generated ids, finish)."""
    ids, finish = [], None
    for resp in stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=prompt),
                                                 max_tokens=max_tokens, **kw)):
        ids.extend(resp.token_ids)
        if resp.HasField("finish"):
            finish = resp.finish
    return ids, finish


def model_info(stub: llm_pb2_grpc.LLMStub) -> pb.ModelInfoResponse:
    return stub.ModelInfo(pb.ModelInfoRequest())


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_parallel(fns, max_workers: int = 32):
    with concurrent.futures.ThreadPoolExecutor(max_workers) as ex:
        futures = [ex.submit(f) for f in fns]
        return [f.result() for f in futures]
