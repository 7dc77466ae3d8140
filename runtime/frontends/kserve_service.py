"""KServe v2 `inference.GRPCInferenceService` over the same scheduler, with the LLM convention
Triton's LLM backends use: inputs `text_input` (BYTES), optional `max_tokens` (INT32/INT64) and
`stream` (BOOL); output `text_output` (BYTES). ModelStreamInfer is decoupled: one response per
generated text chunk when `stream` is true (the last marked with the `triton_final_response`
parameter), one response with the whole text otherwise. Errors inside the stream come back
as `error_message`, the way Triton reports them, and the stream stays open."""
from __future__ import annotations

import struct

import gptoss_edge
from gptoss_edge.kserve import grpc_service_pb2 as kpb
from gptoss_edge.kserve import grpc_service_pb2_grpc
from gptoss_edge.runtime.api import events as ev
from gptoss_edge.runtime.api.errors import ApiError, ErrorKind, invalid
from gptoss_edge.runtime.api.requests import GenerateParams
from gptoss_edge.runtime.api.service import ModelService
from gptoss_edge.runtime.frontends.grpc_handlers import abort, api_error_message

_TENSOR = kpb.ModelMetadataResponse.TensorMetadata
_INT_FORMATS = {"INT32": "<i", "INT64": "<q", "UINT32": "<I", "UINT64": "<Q"}


def _bytes_elements(name: str, raw: bytes) -> list[bytes]:
    """Triton BYTES raw encoding: each element is a 4-byte little-endian length + bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise invalid(f"input {name!r}: raw BYTES tensor ends inside a length prefix "
                          f"(offset {i} of {len(raw)} bytes)")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise invalid(f"input {name!r}: raw BYTES element at offset {i} declares {n} bytes, "
                          f"only {len(raw) - i - 4} follow")
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return out


def _encode_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _int_elements(name: str, dtype: str, raw: bytes) -> list[int]:
    fmt = _INT_FORMATS[dtype]
    size = struct.calcsize(fmt)
    if len(raw) % size:
        raise invalid(f"input {name!r}: raw {dtype} tensor of {len(raw)} bytes is not a "
                      f"multiple of {size}")
    return [v for (v,) in struct.iter_unpack(fmt, raw)]


def _tensor_values(t, raw: bytes | None) -> tuple[str, list]:
    """One input tensor -> (datatype, values). Names the tensor on error."""
    dtype = t.datatype.upper()
    if dtype == "BYTES":
        return dtype, _bytes_elements(t.name, raw) if raw is not None else list(t.contents.bytes_contents)
    if dtype in _INT_FORMATS:
        c = t.contents
        return dtype, (_int_elements(t.name, dtype, raw) if raw is not None else
                       list(c.int_contents) + list(c.int64_contents) + list(c.uint_contents)
                       + list(c.uint64_contents))
    if dtype == "BOOL":
        return dtype, [bool(b) for b in raw] if raw is not None else list(t.contents.bool_contents)
    raise invalid(f"input {t.name!r}: datatype {t.datatype!r} not supported here")


def _expect(values: dict, name: str, dtypes: tuple[str, ...]) -> list | None:
    if name not in values:
        return None
    dtype, vals = values[name]
    if dtype not in dtypes:
        raise invalid(f"input {name!r} must be {' or '.join(dtypes)}, got {dtype}")
    return vals


def parse_inputs(request: kpb.ModelInferRequest) -> tuple[str, int, bool]:
    """-> (text_input, max_tokens (0 = default), stream). Names the bad tensor on error."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    values = {t.name: _tensor_values(t, raw[i] if raw else None)
              for i, t in enumerate(request.inputs)}
    texts = _expect(values, "text_input", ("BYTES",))
    if not texts:
        raise invalid("input 'text_input' (BYTES) is required")
    try:
        text = texts[0].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("input 'text_input' is not UTF-8") from None
    max_tokens = _expect(values, "max_tokens", tuple(_INT_FORMATS))
    max_tokens = int(max_tokens[0]) if max_tokens else 0
    if max_tokens < 0:
        raise invalid(f"input 'max_tokens' must be >= 0, got {max_tokens}")
    stream = _expect(values, "stream", ("BOOL",))
    return text, max_tokens, bool(stream[0]) if stream else False


class KServeService(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: ModelService):
        self.model = model

    async def ServerLive(self, request, context):
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return kpb.ServerReadyResponse(ready=not self.model.draining)

    async def ModelReady(self, request, context):
        return kpb.ModelReadyResponse(ready=request.name == self.model.name
                                      and not self.model.draining)

    async def ServerMetadata(self, request, context):
        return kpb.ServerMetadataResponse(name="gptoss-edge", version=gptoss_edge.__version__)

    async def ModelMetadata(self, request, context):
        try:
            self._check_model(request.name)
        except ApiError as e:
            await abort(context, self.model, e)
        return kpb.ModelMetadataResponse(
            name=self.model.name, versions=["1"], platform=f"gptoss-edge/{self.model.info.target}",
            inputs=[_TENSOR(name="text_input", datatype="BYTES", shape=[1]),
                    _TENSOR(name="max_tokens", datatype="INT32", shape=[1]),
                    _TENSOR(name="stream", datatype="BOOL", shape=[1])],
            outputs=[_TENSOR(name="text_output", datatype="BYTES", shape=[-1])])

    def _check_model(self, name: str) -> None:
        if name != self.model.name:      # KServe names the model on every call
            raise ApiError(ErrorKind.NOT_FOUND,
                           f"model {name!r} is not served here (serving {self.model.name!r})")

    def _response(self, request, text: str, final: bool) -> kpb.ModelInferResponse:
        out = kpb.ModelInferResponse(model_name=self.model.name, model_version="1", id=request.id)
        out.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        out.raw_output_contents.append(_encode_bytes([text.encode("utf-8")]))
        out.parameters["triton_final_response"].bool_param = final
        return out

    async def _chunks(self, request):
        """Yields (text, final) pairs for one request: one per generated chunk when it asks
        to stream, else one with the whole text."""
        self._check_model(request.model_name)
        text, max_tokens, streaming = parse_inputs(request)
        run = await self.model.start_generate(GenerateParams(text=text, max_tokens=max_tokens))
        try:
            pieces, held = [], None
            async for e in run:
                if isinstance(e, ev.Finish):
                    break
                if not streaming:
                    pieces.append(e.text)
                    continue
                if held is not None:
                    yield held, False
                held = e.text
            yield (held or "") if streaming else "".join(pieces), True
        finally:
            run.cancel()

    async def ModelInfer(self, request, context):
        try:
            texts = [text async for text, _final in self._chunks(request)]
            return self._response(request, "".join(texts), True)
        except Exception as e:
            await abort(context, self.model, e)

    async def ModelStreamInfer(self, request_iterator, context):
        async for request in request_iterator:
            try:
                async for text, final in self._chunks(request):
                    yield kpb.ModelStreamInferResponse(
                        infer_response=self._response(request, text, final))
            except Exception as e:
                err = self.model.rejected(e)
                yield kpb.ModelStreamInferResponse(error_message=api_error_message(err))
