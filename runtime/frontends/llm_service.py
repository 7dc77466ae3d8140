"""The typed gptoss_edge.v1.LLM service: Chat (harmony), Generate, Tokenize, Detokenize,
ModelInfo. A thin adapter: protobuf -> neutral parameters (runtime.api.requests), neutral events
-> protobuf, ApiError -> gRPC status (grpc_handlers.GRPC_CODE)."""
from __future__ import annotations

from gptoss_edge.runtime.api import events as ev
from gptoss_edge.runtime.api.errors import invalid
from gptoss_edge.runtime.api.requests import (ChatMessage, ChatParams, GenerateParams, Sampling,
                                              ToolCall, ToolSpec, load_json, tool_schema)
from gptoss_edge.runtime.api.service import ModelService
from gptoss_edge.runtime.frontends.grpc_handlers import abort
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc

FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH,
          "tool_calls": pb.FINISH_REASON_TOOL_CALLS, "cancelled": pb.FINISH_REASON_CANCELLED}
ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_DEVELOPER: "developer", pb.ROLE_USER: "user",
         pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool"}
EFFORT = {pb.REASONING_EFFORT_UNSPECIFIED: "medium", pb.REASONING_EFFORT_LOW: "low",
          pb.REASONING_EFFORT_MEDIUM: "medium", pb.REASONING_EFFORT_HIGH: "high"}


# ---- protobuf -> neutral parameters -----------------------------------------------------------
def sampling(s: pb.SamplingParams) -> Sampling:
    return Sampling(temperature=s.temperature if s.HasField("temperature") else None,
                    top_p=s.top_p if s.HasField("top_p") else None,
                    top_k=s.top_k if s.HasField("top_k") else None,
                    seed=s.seed if s.HasField("seed") else None)


def _enum_name(enum, value: int) -> str:
    return enum.Name(value) if value in enum.values() else str(value)


def chat_message(i: int, m: pb.Message) -> ChatMessage:
    role = ROLES.get(m.role)
    if role is None:
        raise invalid(f"messages[{i}].role: set a harmony role (system, developer, user, "
                      f"assistant, tool), got {_enum_name(pb.Role, m.role)}")
    return ChatMessage(role, m.content, m.reasoning,
                       tuple(ToolCall(c.name, c.arguments) for c in m.tool_calls), m.name)


def tool_spec(i: int, t: pb.Tool) -> ToolSpec:
    schema = None
    if t.parameters_json.strip():
        schema = load_json(t.parameters_json, f"tools[{i}] ({t.name!r}).parameters_json")
    return ToolSpec(t.name, t.description, tool_schema(i, t.name, schema))


def chat_params(r: pb.ChatRequest) -> ChatParams:
    effort = EFFORT.get(r.reasoning_effort)
    if effort is None:
        raise invalid(f"reasoning_effort: {r.reasoning_effort} is not a ReasoningEffort "
                      "(0 unspecified, 1 low, 2 medium, 3 high)")
    return ChatParams(
        messages=tuple(chat_message(i, m) for i, m in enumerate(r.messages)),
        tools=tuple(tool_spec(i, t) for i, t in enumerate(r.tools)), model=r.model,
        reasoning_effort=effort, sampling=sampling(r.sampling), stop=tuple(r.stop),
        max_tokens=r.max_tokens, logprobs=r.logprobs, top_logprobs=r.top_logprobs)


def generate_params(r: pb.GenerateRequest) -> GenerateParams:
    which = r.WhichOneof("prompt")
    return GenerateParams(
        text=r.text if which == "text" else None,
        token_ids=tuple(r.tokens.ids) if which == "tokens" else None, model=r.model,
        sampling=sampling(r.sampling), stop=tuple(r.stop), stop_token_ids=tuple(r.stop_token_ids),
        max_tokens=r.max_tokens, logprobs=r.logprobs, top_logprobs=r.top_logprobs)


# ---- neutral events -> protobuf -----------------------------------------------------------------
def token_logprobs(lps) -> list[pb.TokenLogprob]:
    return [pb.TokenLogprob(token_id=lp.token_id, logprob=lp.logprob,
                            top=[pb.TopLogprob(token_id=t, logprob=v) for t, v in lp.top])
            for lp in lps]


def finish(f: ev.Finish) -> pb.Finish:
    u = f.usage
    return pb.Finish(reason=FINISH[f.reason], usage=pb.Usage(
        prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
        reasoning_tokens=u.reasoning_tokens))


def chat_response(e) -> pb.ChatResponse:
    if isinstance(e, ev.Finish):
        out = pb.ChatResponse(finish=finish(e))
    elif e.kind == "tool_call":
        t = e.tool_call
        out = pb.ChatResponse(tool_call=pb.ToolCallDelta(index=t.index, name=t.name,
                                                         arguments=t.arguments))
    else:
        out = pb.ChatResponse(**{e.kind: e.text})
    out.logprobs.extend(token_logprobs(e.logprobs))
    return out


def generate_response(e) -> pb.GenerateResponse:
    if isinstance(e, ev.Finish):
        return pb.GenerateResponse(finish=finish(e))
    return pb.GenerateResponse(token_ids=e.token_ids, text=e.text,
                               logprobs=token_logprobs(e.logprobs))


class LLMService(llm_pb2_grpc.LLMServicer):
    def __init__(self, model: ModelService):
        self.model = model

    async def _stream(self, start, to_pb, context):
        try:
            run = await start()             # tokenizing runs off the event loop
        except Exception as e:
            await abort(context, self.model, e)
            return
        try:
            async for e in run:
                yield to_pb(e)
        except Exception as e:
            await abort(context, self.model, e)
        finally:
            run.cancel()

    def Generate(self, request: pb.GenerateRequest, context):
        start = lambda: self.model.start_generate(generate_params(request))  # noqa: E731
        return self._stream(start, generate_response, context)

    def Chat(self, request: pb.ChatRequest, context):
        start = lambda: self.model.start_chat(chat_params(request))  # noqa: E731
        return self._stream(start, chat_response, context)

    async def Tokenize(self, request: pb.TokenizeRequest, context):
        try:
            ids = await self.model.tokenize(request.model, request.text)
            return pb.TokenizeResponse(token_ids=ids)
        except Exception as e:
            await abort(context, self.model, e)

    async def Detokenize(self, request: pb.DetokenizeRequest, context):
        try:
            return pb.DetokenizeResponse(
                text=self.model.detokenize(request.model, request.token_ids))
        except Exception as e:
            await abort(context, self.model, e)

    async def ModelInfo(self, request: pb.ModelInfoRequest, context):
        try:
            s = self.model.status(request.model)
        except Exception as e:
            await abort(context, self.model, e)
            return
        return pb.ModelInfoResponse(**vars(s))
