"""The grpc.aio server: typed LLM service, KServe v2, grpc.health.v1, server reflection,
Prometheus metrics on HTTP; Unix socket by default, TCP (+TLS, +bearer token) when asked;
graceful drain (health NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish)."""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gptoss_edge.kserve import grpc_service_pb2 as kpb
from gptoss_edge.runtime.api.service import ModelService
from gptoss_edge.runtime.engine.backend import Backend
from gptoss_edge.runtime.engine.kv import slots_for_budget
from gptoss_edge.runtime.frontends.metrics import ServerMetrics
from gptoss_edge.runtime.engine.scheduler import Scheduler
from gptoss_edge.runtime.frontends.grpc_handlers import add_servicer
from gptoss_edge.runtime.frontends.kserve_service import KServeService
from gptoss_edge.runtime.frontends.llm_service import LLMService
from gptoss_edge.runtime.api.memory import map_big_blocks
from gptoss_edge.runtime.frontends.listen import SocketClaim, check_tcp_free
from gptoss_edge.v1 import llm_pb2 as pb

LLM_SERVICE = pb.DESCRIPTOR.services_by_name["LLM"].full_name
KSERVE_SERVICE = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def default_socket_path() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return str(Path(base) / f"gptoss-edge-{os.getuid()}.sock")


@dataclasses.dataclass
class ServeOptions:
    listen: str = ""                       # "unix:PATH" | "HOST:PORT"; "" = default socket
    model_name: str = "gptoss-edge"
    max_memory: int | None = None          # KV budget in bytes (None: all engine slots)
    max_queue: int = 64                    # admitted requests waiting for a slot
    metrics_port: int | None = None        # None: no metrics endpoint; 0: any free port
    metrics_host: str = "127.0.0.1"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token: str | None = None          # clients send `authorization: Bearer <token>`
    max_message_bytes: int = 4 * 2**20     # larger requests are refused (RESOURCE_EXHAUSTED)
    drain_grace_s: float = 30.0
    http: str = ""                         # "HOST:PORT": OpenAI-compatible HTTP too; "" = off
    prefix_reuse: bool = True              # continue requests from cached prefixes (multi-turn)


def parse_listen(listen: str) -> tuple[str, str]:
    """-> ("unix", path) or ("tcp", "host:port"). Raises ValueError naming the value."""
    if not listen:
        return "unix", default_socket_path()
    if listen.startswith("unix:"):
        path = listen[len("unix:"):].removeprefix("//")
        if not path:
            raise ValueError(f"--listen {listen!r}: empty socket path")
        return "unix", path
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen {listen!r}: expected unix:PATH or HOST:PORT")
    if int(port) > 65535:
        raise ValueError(f"--listen {listen!r}: port {port} is out of range 0..65535 "
                         f"(0: any free port)")
    return "tcp", listen


class BearerAuth(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every call except health checks (probes
    carry no credentials)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(f"/{HEALTH_SERVICE}/"):
            return handler
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(got.encode() if isinstance(got, str) else got, self._expected):
            return handler
        return _deny(handler)


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(_request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "missing or wrong bearer token (send metadata "
                            "'authorization: Bearer <token>')")

    kw = dict(request_deserializer=handler.request_deserializer,
              response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    return grpc.stream_stream_rpc_method_handler(refuse, **kw)


class Server:
    """One served model behind one gRPC server. Create with `await Server.start(...)`."""

    def __init__(self, model: ModelService, options: ServeOptions):
        self.model = model
        self.options = options
        self.health = HealthServicer()
        self.address = ""                  # what a client dials: unix:PATH or HOST:PORT
        self.metrics_port: int | None = None
        self.http = None                   # http_server.HttpFrontend when options.http is set
        self._grpc: grpc.aio.Server | None = None
        self._socket: SocketClaim | None = None     # the Unix socket path this server owns
        self._drained = asyncio.Event()
        self._draining = False

    @classmethod
    async def start(cls, backend: Backend, tokenizer, options: ServeOptions) -> "Server":
        map_big_blocks()                  # big requests' memory goes back to the OS when freed
        metrics = ServerMetrics()
        slots = slots_for_budget(backend.info, options.max_memory)
        scheduler = Scheduler(backend, slots, options.max_queue, metrics,
                              sample_vocab=tokenizer.vocab_size if tokenizer else None,
                              prefix_reuse=options.prefix_reuse)
        model = ModelService(options.model_name, backend, tokenizer, scheduler, metrics)
        server = cls(model, options)
        try:
            await server._bind_and_start()
        except BaseException:
            await server._abandon()
            raise
        return server

    async def _abandon(self) -> None:
        """Undo a start that failed half way (port in use, bad TLS files...)."""
        if self.http is not None:
            await self.http.stop(force=True)
        if self._grpc is not None:
            await self._grpc.stop(grace=None)
        await self.model.scheduler.close()
        self.model.metrics.close_http()
        self._release_socket()

    def _release_socket(self) -> None:
        if self._socket is not None:
            self._socket.release()

    async def _bind_and_start(self) -> None:
        o = self.options
        kind, target = parse_listen(o.listen)
        interceptors = [BearerAuth(o.auth_token)] if o.auth_token else []
        self._grpc = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", o.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ])
        add_servicer(self._grpc, pb.DESCRIPTOR.services_by_name["LLM"], LLMService(self.model))
        add_servicer(self._grpc, kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                     KServeService(self.model))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            [LLM_SERVICE, KSERVE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME], self._grpc)
        creds = _tls_credentials(o)
        if o.metrics_port is not None:      # first: a port in use fails before anything runs
            self.metrics_port = self.model.metrics.serve_http(o.metrics_port, o.metrics_host)
        if kind == "unix":
            self._socket = SocketClaim(target)
            bind = f"unix:{self._socket.prepare()}"
        else:
            bind = target
            check_tcp_free(target.rpartition(":")[0], int(target.rpartition(":")[2]))
        try:
            port = (self._grpc.add_secure_port(bind, creds) if creds
                    else self._grpc.add_insecure_port(bind))
        except RuntimeError:                # grpcio >= 1.5x raises instead of returning 0
            port = 0
        if port == 0:
            raise OSError(f"--listen {o.listen or bind}: cannot listen there (address in use, "
                          f"or not an address of this host)")
        if kind == "tcp" and o.auth_token and not creds and not _is_loopback(target):
            print(f"warning: bearer token sent in clear text on {target}; configure TLS",
                  file=sys.stderr)
        self.address = f"unix:{target}" if kind == "unix" else f"{target.rpartition(':')[0]}:{port}"
        self.model.scheduler.start()
        await self._grpc.start()
        if self._socket is not None:
            self._socket.publish()
        for service in ("", LLM_SERVICE, KSERVE_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if o.http:                          # a failure here is undone by start()'s _abandon
            from gptoss_edge.runtime.frontends.http_server import HttpFrontend
            self.http = await HttpFrontend.start(
                self.model, o.http, token=o.auth_token, tls_cert=o.tls_cert,
                tls_key=o.tls_key, max_body=o.max_message_bytes)

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop taking work, let in-flight requests finish (up to the grace), then stop."""
        if self._draining:
            await self._drained.wait()
            return
        self._draining = True
        grace = self.options.drain_grace_s if grace_s is None else grace_s
        self.model.draining = True
        self.model.scheduler.stop_accepting()
        await self.health.enter_graceful_shutdown()
        try:
            await asyncio.wait_for(self.model.scheduler.wait_idle(), grace)
        except asyncio.TimeoutError:
            self.model.scheduler.abort_all()   # streams end with finish reason CANCELLED
        if self.http is not None:
            await self.http.stop()
        await self._grpc.stop(grace=5.0)      # handlers send their last messages
        await self.model.scheduler.close()
        self._release_socket()
        self._drained.set()

    async def wait_closed(self) -> None:
        await self._drained.wait()

    async def stop(self) -> None:
        """Immediate stop (tests, errors): no grace."""
        if not self._draining:
            self._draining = True
            self.model.draining = True
            if self.http is not None:
                await self.http.stop(force=True)
            await self._grpc.stop(grace=None)
            await self.model.scheduler.close()
            self._release_socket()
            self._drained.set()


def _tls_credentials(o: ServeOptions) -> grpc.ServerCredentials | None:
    if not o.tls_cert and not o.tls_key:
        return None
    if not (o.tls_cert and o.tls_key):
        raise ValueError("--tls-cert and --tls-key must be given together")
    for flag, path in (("--tls-cert", o.tls_cert), ("--tls-key", o.tls_key)):
        if not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file")
    return grpc.ssl_server_credentials([(Path(o.tls_key).read_bytes(),
                                         Path(o.tls_cert).read_bytes())])


def _is_loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")
