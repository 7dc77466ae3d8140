"""What the gRPC front ends share: ErrorKind -> gRPC status, and servicer registration that
parses request bytes itself. grpcio's generated handlers deserialize before our code runs, so
undecodable bytes would answer UNKNOWN; here they answer INVALID_ARGUMENT."""
from __future__ import annotations

import dataclasses

import grpc
from google.protobuf import message as pb_message
from google.protobuf import message_factory

from gptoss_edge.runtime.api.errors import ApiError, ErrorKind

GRPC_CODE = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.MODEL_OUTPUT: grpc.StatusCode.INTERNAL,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


async def abort(context: grpc.aio.ServicerContext, model, exc: BaseException):
    """End the call with the status of `exc` (counted as a rejection when it is one)."""
    err = model.rejected(exc)
    await context.abort(GRPC_CODE[err.kind], err.message)


@dataclasses.dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not the method's message."""
    message: str


def _parser(cls):
    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except (pb_message.DecodeError, RecursionError, ValueError) as e:
            return Undecodable(f"request is not a valid {cls.DESCRIPTOR.full_name} message: {e}")
    return parse


def _refuse_undecodable(request, context):
    return context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _unary(fn):
    async def call(request, context):
        if isinstance(request, Undecodable):
            await _refuse_undecodable(request, context)
        return await fn(request, context)
    return call


def _server_stream(fn):
    async def call(request, context):
        if isinstance(request, Undecodable):
            await _refuse_undecodable(request, context)
        async for response in fn(request, context):
            yield response
    return call


def _client_stream(fn, streams_out: bool):
    async def checked(requests, context):
        async for request in requests:
            if isinstance(request, Undecodable):
                await _refuse_undecodable(request, context)
            yield request

    if streams_out:
        async def call(requests, context):
            async for response in fn(checked(requests, context), context):
                yield response
        return call

    async def call_unary(requests, context):
        return await fn(checked(requests, context), context)
    return call_unary


def add_servicer(server: grpc.aio.Server, service, servicer) -> None:
    """Register every method of `service` (a protobuf ServiceDescriptor) on `servicer`."""
    handlers = {}
    for method in service.methods:
        fn = getattr(servicer, method.name)
        cls = message_factory.GetMessageClass(method.input_type)
        out = message_factory.GetMessageClass(method.output_type)
        kw = dict(request_deserializer=_parser(cls), response_serializer=out.SerializeToString)
        if method.client_streaming:
            make = (grpc.stream_stream_rpc_method_handler if method.server_streaming
                    else grpc.stream_unary_rpc_method_handler)
            handlers[method.name] = make(_client_stream(fn, method.server_streaming), **kw)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(_server_stream(fn), **kw)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary(fn), **kw)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))


def api_error_message(exc: ApiError) -> str:
    return f"{GRPC_CODE[exc.kind].name}: {exc.message}"
