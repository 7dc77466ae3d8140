"""Client-side helpers shared by `gptoss-edge chat`, `bench` and the tests: dial a server
address (unix:PATH or HOST:PORT), optionally with TLS and a bearer token; private sockets for
servers a client starts itself."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

import grpc

from gptoss_edge.v1 import llm_pb2_grpc


@contextlib.contextmanager
def private_socket(prefix: str) -> Iterator[str]:
    """A `unix:` address in a new private folder, removed with its contents on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield f"unix:{Path(folder) / 's.sock'}"


class _Bearer(grpc.AuthMetadataPlugin):
    def __init__(self, token: str):
        self._token = token

    def __call__(self, context, callback):
        callback((("authorization", f"Bearer {self._token}"),), None)


def open_channel(address: str, *, tls_ca: Path | None = None, token: str | None = None,
                 server_name: str | None = None, max_message_bytes: int = 64 * 2**20
                 ) -> grpc.aio.Channel:
    """An asyncio channel. With `tls_ca` the connection is TLS-verified against that CA; a
    `token` is sent as `authorization: Bearer ...` (over TLS as call credentials, in clear
    text metadata otherwise)."""
    options = [("grpc.max_send_message_length", max_message_bytes),
               ("grpc.max_receive_message_length", max_message_bytes)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if tls_ca is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        if token:
            creds = grpc.composite_channel_credentials(
                creds, grpc.metadata_call_credentials(_Bearer(token)))
        return grpc.aio.secure_channel(address, creds, options=options)
    interceptors = [_UU(token), _US(token), _SS(token)] if token else None
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def llm_stub(channel: grpc.aio.Channel) -> llm_pb2_grpc.LLMStub:
    return llm_pb2_grpc.LLMStub(channel)


class _TokenMixin:
    def __init__(self, token: str):
        self._md = ("authorization", f"Bearer {token}")

    def _with_token(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        md = grpc.aio.Metadata(*(tuple(d.metadata or ())), self._md)
        return grpc.aio.ClientCallDetails(d.method, d.timeout, md, d.credentials, d.wait_for_ready)


class _UU(_TokenMixin, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._with_token(details), request)


class _US(_TokenMixin, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._with_token(details), request)


class _SS(_TokenMixin, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(self._with_token(details), request_iterator)
