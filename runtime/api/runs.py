"""A submitted request's token stream turned into neutral events: GenerateRun (token ids +
text with stop strings) and ChatRun (harmony deltas). Iterate one to get its deltas and then
exactly one Finish; cancel() (idempotent) frees the KV slot at the next step boundary. Errors
come out as ApiError."""
from __future__ import annotations

from typing import AsyncIterator

from gptoss_edge.runtime.api.errors import ApiError, as_api_error
from gptoss_edge.runtime.api.events import ChatDelta, Finish, GenerateChunk, TokenLogprob, Usage
from gptoss_edge.runtime.chat.chat_turn import ChatTurn
from gptoss_edge.runtime.engine.sampler import StopStringMatcher


def token_logprob(ev) -> TokenLogprob:
    return TokenLogprob(ev.token_id, float(ev.logprob),
                        tuple((int(t), float(lp)) for t, lp in (ev.top_logprobs or ())))


class _Run:
    def __init__(self, stream, prompt_tokens: int, want_logprobs: bool):
        self.stream = stream
        self.prompt_tokens = prompt_tokens
        self.want_logprobs = want_logprobs

    def cancel(self) -> None:
        self.stream.cancel()

    def __aiter__(self):
        return self._checked()

    async def _checked(self):
        try:
            async for ev in self._events():
                yield ev
        except ApiError:
            raise
        except Exception as e:   # an engine fault ends this stream only
            raise as_api_error(e) from e
        finally:
            self.stream.cancel()

    def _end_reason(self, reason: str | None) -> str:
        return reason or (self.stream.end.reason if self.stream.end else "stop")


class GenerateRun(_Run):
    def __init__(self, stream, prompt_tokens: int, want_logprobs: bool, decoder,
                 stops: tuple[str, ...]):
        super().__init__(stream, prompt_tokens, want_logprobs)
        self.decoder = decoder            # IncrementalDecoder, or None (token ids only)
        self.matcher = StopStringMatcher(list(stops))

    async def _events(self) -> AsyncIterator[GenerateChunk | Finish]:
        completion, reason = 0, None
        async for first in self.stream:
            ids, text, lps = [], "", []
            for ev in [first, *self.stream.ready_events()]:   # tokens that piled up: one chunk
                completion += 1
                ids.append(ev.token_id)
                if self.want_logprobs:
                    lps.append(token_logprob(ev))
                piece = self._text(ev)
                match = self.matcher.feed(piece)
                text += match.text
                if match.stop is not None:
                    reason = "stop"
                    self.stream.cancel()
                    break
                if ev.finish:
                    reason = ev.finish
                    text += self.matcher.flush()
            yield GenerateChunk(tuple(ids), text, tuple(lps))
            if reason:
                break
        yield Finish(self._end_reason(reason), Usage(self.prompt_tokens, completion))

    def _text(self, ev) -> str:
        if self.decoder is None:
            return ""
        text = "" if ev.is_stop_token else self.decoder.feed(ev.token_id)
        return text + self.decoder.flush() if ev.finish else text


class ChatRun(_Run):
    def __init__(self, stream, prompt_tokens: int, want_logprobs: bool, turn: ChatTurn):
        super().__init__(stream, prompt_tokens, want_logprobs)
        self.turn = turn

    async def _events(self) -> AsyncIterator[ChatDelta | Finish]:
        turn = self.turn
        pending: list[TokenLogprob] = []   # logprobs of tokens not yet shown in a delta
        reason = None
        async for ev in self.stream:
            if self.want_logprobs:
                pending.append(token_logprob(ev))
            for delta in turn.feed(ev.token_id):
                if pending:
                    delta = ChatDelta(delta.kind, delta.text, delta.tool_call, tuple(pending))
                    pending.clear()
                yield delta
            reason = turn.finish_reason or ev.finish
            if reason:
                break
        reason = self._end_reason(reason)
        for delta in turn.close():
            yield delta
        usage = Usage(self.prompt_tokens, turn.tokens, turn.reasoning_tokens)
        yield Finish(reason, usage, tuple(pending))
