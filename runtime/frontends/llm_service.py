"""The typed gptoss_edge.v1.LLM service: Chat (harmony), Generate, Tokenize, Detokenize,
ModelInfo. Every refusal happens before a KV slot is taken and carries a precise status; a
stream that fails later (engine fault, malformed harmony) ends with a clear error and never
touches other streams."""
from __future__ import annotations

import grpc

from gptoss_edge.runtime.chat import chat_turn
from gptoss_edge.runtime.engine.scheduler import SeqRequest
from gptoss_edge.runtime.frontends.served_model import RequestError, ServedModel, invalid, status_for
from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams, StopStringMatcher
from gptoss_edge.v1 import llm_pb2 as pb
from gptoss_edge.v1 import llm_pb2_grpc

FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH,
          "tool_calls": pb.FINISH_REASON_TOOL_CALLS, "cancelled": pb.FINISH_REASON_CANCELLED}


async def abort(context: grpc.aio.ServicerContext, model: ServedModel, exc: BaseException):
    code, message = status_for(exc)
    if code != grpc.StatusCode.INTERNAL:
        model.metrics.rejected.labels(code.name).inc()
    await context.abort(code, message)


def make_sampler(sampling: pb.SamplingParams, max_tokens: int, stop, logprobs: bool,
                 top_logprobs: int):
    """Proto sampling fields -> runtime.sampler.Sampler (validate() names a bad field)."""
    params = SamplingParams(
        temperature=sampling.temperature if sampling.HasField("temperature") else 0.0,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        top_k=sampling.top_k if sampling.HasField("top_k") else 0,
        seed=sampling.seed if sampling.HasField("seed") else None,
        max_tokens=max_tokens, stop=tuple(stop), logprobs=int(top_logprobs))
    return Sampler(params)   # validates: ValueError names the field


def token_logprob(ev) -> pb.TokenLogprob:
    top = [pb.TopLogprob(token_id=int(t), logprob=float(lp)) for t, lp in (ev.top_logprobs or ())]
    return pb.TokenLogprob(token_id=ev.token_id, logprob=float(ev.logprob), top=top)


class LLMService(llm_pb2_grpc.LLMServicer):
    def __init__(self, model: ServedModel):
        self.model = model

    # ---- Generate ---------------------------------------------------------------------------
    def _generate_prompt(self, request: pb.GenerateRequest) -> list[int]:
        which = request.WhichOneof("prompt")
        if which == "text":
            if not request.text:
                raise invalid("text: empty prompt")
            return self.model.need_tokenizer().encode(request.text)
        if which == "tokens":
            return list(request.tokens.ids)
        raise invalid("prompt: set `text` or `tokens`")

    def _eos_ids(self) -> set[int]:
        """The model's declared end-of-sequence token (config.json eos_token_id; <|return|>
        for gpt-oss); none for checkpoints that declare none."""
        eos = self.model.info.config.eos_token_id
        return {eos} if eos is not None else set()

    async def Generate(self, request: pb.GenerateRequest, context):
        m = self.model
        try:
            m.check_accepting()
            m.check_name(request.model)
            prompt = self._generate_prompt(request)
            m.check_prompt(prompt)
            vocab = m.info.config.vocab_size
            bad = [t for t in request.stop_token_ids if not 0 <= t < vocab]
            if bad:
                raise invalid(f"stop_token_ids: {bad[0]} is outside the vocabulary [0, {vocab})")
            max_new = m.max_new_tokens(len(prompt), request.max_tokens)
            sampler = make_sampler(request.sampling, max_new, request.stop, request.logprobs,
                                   request.top_logprobs)
            matcher = StopStringMatcher(list(request.stop))
            if request.stop:
                m.need_tokenizer()
            stops = frozenset(self._eos_ids() | set(request.stop_token_ids))
            stream = m.scheduler.submit(SeqRequest(prompt, sampler, max_new, stops))
        except Exception as e:
            await abort(context, m, e)
            return
        decoder = _decoder(m.tokenizer)
        usage = pb.Usage(prompt_tokens=len(prompt))
        want_logprobs = request.logprobs or request.top_logprobs > 0
        reason = None
        try:
            async for first in stream:
                out = pb.GenerateResponse()
                for ev in [first, *stream.ready_events()]:    # tokens that piled up: one message
                    usage.completion_tokens += 1
                    out.token_ids.append(ev.token_id)
                    if want_logprobs:
                        out.logprobs.append(token_logprob(ev))
                    text = "" if ev.is_stop_token or decoder is None else decoder.feed(ev.token_id)
                    if ev.finish and decoder is not None:
                        text += decoder.flush()
                    match = matcher.feed(text)
                    out.text += match.text
                    if match.stop is not None:
                        reason = "stop"
                        stream.cancel()
                        break
                    if ev.finish:
                        reason = ev.finish
                        out.text += matcher.flush()
                yield out
                if reason:
                    break
            reason = reason or (stream.end.reason if stream.end else "stop")
            yield pb.GenerateResponse(finish=pb.Finish(reason=FINISH[reason], usage=usage))
        except Exception as e:
            await abort(context, m, e)
        finally:
            stream.cancel()

    # ---- Chat ---------------------------------------------------------------------------------
    async def Chat(self, request: pb.ChatRequest, context):
        m = self.model
        try:
            m.check_accepting()
            m.check_name(request.model)
            tok = m.need_tokenizer()
            prompt = chat_turn.render_request(request, tok)
            m.check_prompt(prompt)
            max_new = m.max_new_tokens(len(prompt), request.max_tokens)
            sampler = make_sampler(request.sampling, max_new, request.stop, request.logprobs,
                                   request.top_logprobs)
            turn = chat_turn.ChatTurn(tok, list(request.stop))
            stream = m.scheduler.submit(SeqRequest(prompt, sampler, max_new,
                                                   turn.stop_token_ids))
        except Exception as e:
            await abort(context, m, e)
            return
        want_logprobs = request.logprobs or request.top_logprobs > 0
        pending: list[pb.TokenLogprob] = []   # logprobs of tokens not yet shown in a delta
        reason = None
        try:
            async for ev in stream:
                if want_logprobs:
                    pending.append(token_logprob(ev))
                for resp in turn.feed(ev.token_id):
                    resp.logprobs.extend(pending)
                    pending.clear()
                    yield resp
                reason = turn.finish_reason or ev.finish
                if reason:
                    break
            reason = reason or (stream.end.reason if stream.end else "stop")
            for resp in turn.close():
                yield resp
            usage = pb.Usage(prompt_tokens=len(prompt), completion_tokens=turn.tokens,
                             reasoning_tokens=turn.reasoning_tokens)
            final = pb.ChatResponse(finish=pb.Finish(reason=FINISH[reason], usage=usage))
            final.logprobs.extend(pending)
            yield final
        except chat_turn.MalformedOutput as e:
            await context.abort(grpc.StatusCode.INTERNAL, str(e))
        except Exception as e:
            await abort(context, m, e)
        finally:
            stream.cancel()

    # ---- small unary calls ------------------------------------------------------------------
    async def Tokenize(self, request: pb.TokenizeRequest, context):
        try:
            self.model.check_name(request.model)
            ids = self.model.need_tokenizer().encode(request.text)
        except Exception as e:
            await abort(context, self.model, e)
            return
        return pb.TokenizeResponse(token_ids=ids)

    async def Detokenize(self, request: pb.DetokenizeRequest, context):
        try:
            self.model.check_name(request.model)
            tok = self.model.need_tokenizer()
            vocab = tok.vocab_size
            bad = next((t for t in request.token_ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise invalid(f"token_ids: {bad} is outside the vocabulary [0, {vocab})")
            text = tok.decode(list(request.token_ids))
        except Exception as e:
            await abort(context, self.model, e)
            return
        return pb.DetokenizeResponse(text=text)

    async def ModelInfo(self, request: pb.ModelInfoRequest, context):
        m = self.model
        try:
            m.check_name(request.model)
        except RequestError as e:
            await abort(context, m, e)
            return
        info, sched = m.info, m.scheduler
        return pb.ModelInfoResponse(
            name=m.name, target=info.target, vocab_size=info.config.vocab_size,
            max_context=info.max_context, num_layers=info.config.num_hidden_layers,
            kv_slots_total=sched.slots.total, kv_slots_used=sched.slots.used,
            kv_slots_free=sched.slots.free, queue_depth=sched.queue_depth,
            kv_bytes_per_token=info.kv_layout.full_bytes_per_token, max_step_tokens=info.max_step_tokens)


def _decoder(tokenizer):
    if tokenizer is None:
        return None
    from gptoss_edge.runtime.tokens.tokenizer import IncrementalDecoder
    return IncrementalDecoder(tokenizer)


