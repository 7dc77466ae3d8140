"""KServe v2 `inference.GRPCInferenceService` over the same scheduler, with the LLM convention
Triton's LLM backends use: inputs `text_input` (BYTES), optional `max_tokens` (INT32/INT64) and
`stream` (BOOL); output `text_output` (BYTES). ModelStreamInfer is decoupled: one response per
generated text chunk when `stream` is true (the last marked with the `triton_final_response`
parameter), one response with the whole text otherwise. Errors inside the stream come back
as `error_message`, the way Triton reports them, and the stream stays open."""
from __future__ import annotations

import struct

import grpc

import gptoss_edge
from gptoss_edge.kserve import grpc_service_pb2 as kpb
from gptoss_edge.kserve import grpc_service_pb2_grpc
from gptoss_edge.runtime.engine.scheduler import SeqRequest
from gptoss_edge.runtime.frontends.served_model import RequestError, ServedModel, invalid, status_for
from gptoss_edge.v1 import llm_pb2 as pb

_TENSOR = kpb.ModelMetadataResponse.TensorMetadata


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Triton BYTES raw encoding: each element is a 4-byte little-endian length + bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise invalid("raw BYTES tensor: truncated length prefix")
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return out


def _encode_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def parse_inputs(request: kpb.ModelInferRequest) -> tuple[str, int, bool]:
    """-> (text_input, max_tokens (0 = default), stream). Names the bad tensor on error."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    values: dict[str, list] = {}
    for i, t in enumerate(request.inputs):
        dtype = t.datatype.upper()
        if dtype == "BYTES":
            vals = _bytes_elements(raw[i]) if raw else list(t.contents.bytes_contents)
        elif dtype in ("INT32", "INT64", "UINT32", "UINT64"):
            fmt = {"INT32": "<i", "INT64": "<q", "UINT32": "<I", "UINT64": "<Q"}[dtype]
            vals = ([v for (v,) in struct.iter_unpack(fmt, raw[i])] if raw else
                    list(t.contents.int_contents) + list(t.contents.int64_contents)
                    + list(t.contents.uint_contents) + list(t.contents.uint64_contents))
        elif dtype == "BOOL":
            vals = [bool(b) for b in raw[i]] if raw else list(t.contents.bool_contents)
        else:
            raise invalid(f"input {t.name!r}: datatype {t.datatype!r} not supported here")
        values[t.name] = vals
    if "text_input" not in values or not values["text_input"]:
        raise invalid("input 'text_input' (BYTES) is required")
    try:
        text = values["text_input"][0].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("input 'text_input' is not UTF-8") from None
    max_tokens = int(values.get("max_tokens", [0])[0]) if values.get("max_tokens") else 0
    if max_tokens < 0:
        raise invalid(f"input 'max_tokens' must be >= 0, got {max_tokens}")
    stream = bool(values.get("stream", [False])[0]) if values.get("stream") else False
    return text, max_tokens, stream


class KServeService(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: ServedModel):
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
        except RequestError as e:
            await context.abort(e.code, e.message)
        return kpb.ModelMetadataResponse(
            name=self.model.name, versions=["1"], platform=f"gptoss-edge/{self.model.info.target}",
            inputs=[_TENSOR(name="text_input", datatype="BYTES", shape=[1]),
                    _TENSOR(name="max_tokens", datatype="INT32", shape=[1]),
                    _TENSOR(name="stream", datatype="BOOL", shape=[1])],
            outputs=[_TENSOR(name="text_output", datatype="BYTES", shape=[-1])])

    def _check_model(self, name: str) -> None:
        if name != self.model.name:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {name!r} is not served here (serving {self.model.name!r})")

    def _start(self, request: kpb.ModelInferRequest):
        """Validate and submit; -> (stream, decoder, wants_streaming)."""
        from gptoss_edge.runtime.frontends.llm_service import make_sampler
        from gptoss_edge.runtime.tokens.tokenizer import IncrementalDecoder

        m = self.model
        m.check_accepting()
        self._check_model(request.model_name)
        text, max_tokens, streaming = parse_inputs(request)
        tok = m.need_tokenizer()
        prompt = tok.encode(text)
        m.check_prompt(prompt)
        max_new = m.max_new_tokens(len(prompt), max_tokens)
        sampler = make_sampler(pb.SamplingParams(), max_new, [], False, 0)
        eos = m.info.config.eos_token_id
        stops = {eos} if eos is not None else set()
        stream = m.scheduler.submit(SeqRequest(prompt, sampler, max_new, frozenset(stops)))
        return stream, IncrementalDecoder(tok), streaming

    def _response(self, request, text: str, final: bool) -> kpb.ModelInferResponse:
        out = kpb.ModelInferResponse(model_name=self.model.name, model_version="1", id=request.id)
        out.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        out.raw_output_contents.append(_encode_bytes([text.encode("utf-8")]))
        out.parameters["triton_final_response"].bool_param = final
        return out

    async def _chunks(self, request):
        """Yields (text, final) pairs for one request."""
        stream, decoder, streaming = self._start(request)
        try:
            pieces = []
            async for ev in stream:
                piece = "" if ev.is_stop_token else decoder.feed(ev.token_id)
                if ev.finish:
                    piece += decoder.flush()
                if streaming:
                    yield piece, ev.finish is not None
                else:
                    pieces.append(piece)
            if not streaming:
                yield "".join(pieces), True
        finally:
            stream.cancel()

    async def ModelInfer(self, request, context):
        try:
            texts = [text async for text, _final in self._chunks(request)]
            return self._response(request, "".join(texts), True)
        except Exception as e:
            code, message = status_for(e)
            await context.abort(code, message)

    async def ModelStreamInfer(self, request_iterator, context):
        async for request in request_iterator:
            try:
                async for text, final in self._chunks(request):
                    yield kpb.ModelStreamInferResponse(
                        infer_response=self._response(request, text, final))
            except Exception as e:
                code, message = status_for(e)
                yield kpb.ModelStreamInferResponse(error_message=f"{code.name}: {message}")
