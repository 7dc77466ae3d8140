"""OpenAI-compatible HTTP front end (Starlette app served by uvicorn on the server's event loop),
beside gRPC over the same scheduler: GET /v1/models, GET /v1/models/{id}, POST
/v1/chat/completions (server-sent events when `stream` is true), GET /health. A thin adapter:
JSON <-> neutral API in openai_wire.py. Errors are OpenAI error JSON with the matching HTTP
status; the bearer token and TLS files are the gRPC server's; a client that disconnects cancels
its request, which frees the KV slot at the next step boundary."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import time
from typing import Any, AsyncIterator, Awaitable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gptoss_edge.runtime.api import events as ev
from gptoss_edge.runtime.api.errors import ApiError, ErrorKind, invalid
from gptoss_edge.runtime.api.service import ModelService
from gptoss_edge.runtime.frontends import openai_wire as wire

UNAUTHENTICATED = ApiError(ErrorKind.UNAUTHENTICATED,
                           "missing or wrong bearer token (send 'Authorization: Bearer <token>')")


class BodyTooLarge(ApiError):
    status = 413


def error_response(err: ApiError) -> JSONResponse:
    status, body = wire.error_body(err, getattr(err, "status", None))
    return JSONResponse(body, status_code=status)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, refused past `max_bytes` before reading it all."""
    declared = request.headers.get("content-length", "")
    too_large = BodyTooLarge(ErrorKind.RESOURCE_EXHAUSTED,
                             f"request body is larger than {max_bytes} bytes")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    try:
        return json.loads(body)
    except RecursionError:
        raise invalid("request body nests too deeply") from None
    except ValueError as e:          # JSONDecodeError, UnicodeDecodeError
        raise invalid(f"request body is not valid JSON: {e}") from None


def sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(work: Awaitable, receive) -> tuple[bool, Any]:
    """Run `work` until it ends or the client disconnects -> (finished, result)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return True, task.result()
        return False, None
    finally:
        for t in (task, watch):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class EventStream:
    """ASGI response streaming server-sent events; `on_disconnect` runs when the client goes."""

    def __init__(self, chunks: AsyncIterator[bytes], on_disconnect):
        self.chunks = chunks
        self.on_disconnect = on_disconnect

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})

        async def pump():
            async for data in self.chunks:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        finished, _ = await unless_disconnected(pump(), receive)
        if not finished:
            self.on_disconnect()


class ChatEndpoint:
    def __init__(self, model: ModelService, max_body: int):
        self.model = model
        self.max_body = max_body

    async def handle(self, request: Request):
        m = self.model
        try:
            params, options = wire.chat_request(await read_json(request, self.max_body))
            run = await m.start_chat(params)
        except Exception as e:
            return error_response(m.rejected(e))
        completion = wire.Completion(m.name, m.tokenizer, params.logprobs or params.top_logprobs > 0)
        if options.stream:
            return EventStream(self._chunks(run, completion, options.include_usage), run.cancel)
        finished, response = await unless_disconnected(self._collect(run, completion),
                                                       request.receive)
        run.cancel()
        return response if finished else JSONResponse({}, status_code=499)   # nobody reads it

    async def _collect(self, run, completion: wire.Completion) -> JSONResponse:
        try:
            async for e in run:
                if isinstance(e, ev.Finish):
                    return JSONResponse(completion.response(e))
                completion.add(e)
        except Exception as e:
            return error_response(self.model.rejected(e))
        finally:
            run.cancel()
        raise AssertionError("unreachable: a run always ends with Finish")

    async def _chunks(self, run, completion: wire.Completion, include_usage: bool):
        first = True
        try:
            async for e in run:
                yield sse(completion.chunk(e, first))
                first = False
                if isinstance(e, ev.Finish) and include_usage:
                    yield sse(completion.usage_chunk(e.usage))
            yield b"data: [DONE]\n\n"
        except Exception as e:           # after the 200 header: the error travels as an event
            yield sse(wire.error_body(self.model.rejected(e))[1])
        finally:
            run.cancel()


class BearerAuth:
    """ASGI middleware: `Authorization: Bearer <token>` on every path but /health."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            got = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                await error_response(UNAUTHENTICATED)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def make_app(model: ModelService, token: str | None, max_body: int):
    created = int(time.time())

    async def models(request: Request):
        return JSONResponse(wire.models_json(model.name, created))

    async def one_model(request: Request):
        try:
            model.check_name(request.path_params["name"])
        except ApiError as e:
            return error_response(e)
        return JSONResponse(wire.model_json(model.name, created))

    async def health(request: Request):
        return JSONResponse({"status": "draining" if model.draining else "serving"},
                            status_code=503 if model.draining else 200)

    async def http_error(request: Request, exc: HTTPException):
        kind = ErrorKind.NOT_FOUND if exc.status_code == 404 else ErrorKind.INVALID_ARGUMENT
        err = ApiError(kind, f"{request.method} {request.url.path}: {exc.detail}")
        status, body = wire.error_body(err, exc.status_code)
        body["error"]["code"] = None
        return JSONResponse(body, status_code=status)

    async def server_error(request: Request, exc: Exception):
        return error_response(ApiError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"))

    app = Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", one_model, methods=["GET"]),
        Route("/v1/chat/completions", ChatEndpoint(model, max_body).handle, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ], exception_handlers={HTTPException: http_error,
                                                  Exception: server_error})
    return BearerAuth(app, token) if token else app


def bind_tcp(target: str) -> socket.socket:
    """HOST:PORT -> a listening socket (port 0: any free port). OSError names the address."""
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise OSError(f"--http {target}: expected HOST:PORT (e.g. 127.0.0.1:8000)")
    if int(port) > 65535:
        raise OSError(f"--http {target}: port must be 0..65535")
    try:
        family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, int(port)), family=family)
    except (OSError, ValueError, OverflowError) as e:
        raise OSError(f"--http {target}: cannot listen there ({e})") from None


class HttpFrontend:
    """The uvicorn server of one app; `await HttpFrontend.start(...)`, then `stop()`."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, scheme: str):
        self._server = server
        self._sock = sock
        self._task: asyncio.Task | None = None
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self.address = f"{scheme}://{host}:{port}"

    @classmethod
    async def start(cls, model: ModelService, target: str, *, token: str | None,
                    tls_cert=None, tls_key=None, max_body: int = 4 * 2**20) -> "HttpFrontend":
        sock = bind_tcp(target)
        config = uvicorn.Config(make_app(model, token, max_body), lifespan="off",
                                log_config=None, log_level="warning", access_log=False,
                                ssl_certfile=str(tls_cert) if tls_cert else None,
                                ssl_keyfile=str(tls_key) if tls_key else None,
                                timeout_graceful_shutdown=5)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        front = cls(server, sock, "https" if tls_cert else "http")
        await server.startup(sockets=[sock])
        front._task = asyncio.get_running_loop().create_task(server.main_loop(), name="http")
        return front

    async def stop(self, force: bool = False) -> None:
        """Close the listener and the connections (in-flight requests finish unless `force`)."""
        if self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = force
        await self._task
        self._task = None
        await self._server.shutdown(sockets=[self._sock])
        self._sock.close()
