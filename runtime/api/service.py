"""The served model behind every front end: backend + tokenizer + scheduler, the drain gate,
and the validation that turns neutral request parameters into a submitted sequence. Every
refusal is an ApiError raised before a KV slot is taken."""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from typing import Any, Callable

from gptoss_edge.runtime.api.errors import ApiError, ErrorKind, as_api_error, invalid
from gptoss_edge.runtime.api.requests import ChatParams, GenerateParams, Sampling
from gptoss_edge.runtime.api.runs import ChatRun, GenerateRun
from gptoss_edge.runtime.chat import chat_turn
from gptoss_edge.runtime.engine.backend import Backend
from gptoss_edge.runtime.api.memory import BigRequestCollector
from gptoss_edge.runtime.engine.sampler import Sampler, SamplingParams
from gptoss_edge.runtime.engine.scheduler import Scheduler, SeqRequest


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    name: str
    target: str
    vocab_size: int
    max_context: int
    num_layers: int
    kv_slots_total: int
    kv_slots_used: int
    kv_slots_free: int
    queue_depth: int
    kv_bytes_per_token: int
    max_step_tokens: int


def make_sampler(sampling: Sampling, max_tokens: int, stop=(), top_logprobs: int = 0) -> Sampler:
    """Neutral sampling fields -> the one Sampler (the CLI's `generate` uses it too). Unset
    temperature means greedy. ApiError names a bad field."""
    params = SamplingParams(
        temperature=0.0 if sampling.temperature is None else sampling.temperature,
        top_p=1.0 if sampling.top_p is None else sampling.top_p,
        top_k=0 if sampling.top_k is None else sampling.top_k,
        seed=sampling.seed, max_tokens=max_tokens, stop=tuple(stop), logprobs=int(top_logprobs))
    try:
        return Sampler(params)
    except ValueError as e:    # validate() names the field
        raise invalid(str(e)) from None


@dataclasses.dataclass
class ModelService:
    name: str
    backend: Backend
    tokenizer: Any | None          # runtime.tokens.tokenizer.Tokenizer; None: token ids only
    scheduler: Scheduler
    metrics: Any | None = None     # frontends.metrics.ServerMetrics
    draining: bool = False
    # Tokenizing runs here, off the event loop (a 4 MB text takes seconds); one thread: texts
    # queue instead of tokenizing side by side (each holds memory while it runs).
    tokenize_pool: concurrent.futures.ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, "tokenize"))
    big_requests: BigRequestCollector = dataclasses.field(default_factory=BigRequestCollector)

    def __post_init__(self):
        if self.tokenizer is not None:              # computed once, before the first request
            self.tokenize_pool.submit(lambda: self.tokenizer.max_token_bytes)

    @property
    def info(self):
        return self.backend.info

    # ---- checks -------------------------------------------------------------------------------
    def check_name(self, requested: str) -> None:
        if requested and requested != self.name:
            raise ApiError(ErrorKind.NOT_FOUND,
                           f"model {requested!r} is not served here (serving {self.name!r})")

    def check_accepting(self) -> None:
        if self.draining:
            raise ApiError(ErrorKind.UNAVAILABLE,
                           "server is draining (shutting down); not accepting new requests")

    def need_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ApiError(ErrorKind.FAILED_PRECONDITION,
                           f"engine {self.name!r} has no tokenizer; send token ids")
        return self.tokenizer

    def check_text_fits(self, field: str, text: str) -> None:
        """Refuse, before tokenizing it, a text that cannot fit the context: it encodes to at
        least ceil(characters / max_token_bytes) tokens (Tokenizer.min_tokens)."""
        tok = self.need_tokenizer()
        self.big_requests.saw(text)
        need = tok.min_tokens(text)
        if need > self.info.max_context:
            raise invalid(f"{field}: {len(text)} characters are at least {need} tokens (this "
                          f"tokenizer's ids hold at most {tok.max_token_bytes} bytes); the context "
                          f"holds {self.info.max_context}")

    async def off_loop(self, fn: Callable, *args):
        """Run tokenizer work (encode, chat rendering) in the tokenize thread."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenize_pool, fn, *args)

    async def encode(self, field: str, text: str) -> list[int]:
        """`text` -> ids, size-checked first, tokenized off the event loop."""
        self.check_text_fits(field, text)
        return await self.off_loop(self.need_tokenizer().encode, text)

    def check_prompt(self, prompt: list[int]) -> None:
        """Prompt must be non-empty, in the vocabulary, and fit the context."""
        if not prompt:
            raise invalid("prompt is empty")
        vocab = self.info.config.vocab_size
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise invalid(f"prompt token id {bad} is outside the vocabulary [0, {vocab})")
        if len(prompt) > self.info.max_context:
            raise invalid(f"prompt is {len(prompt)} tokens; the context holds "
                          f"{self.info.max_context}")

    def max_new_tokens(self, prompt_len: int, requested: int) -> int:
        if requested < 0:
            raise invalid(f"max_tokens must be >= 0, got {requested}")
        room = self.info.max_context - prompt_len + 1   # the last sampled token needs no slot
        return max(1, min(requested, room) if requested else room)

    def rejected(self, exc: BaseException) -> ApiError:
        """The ApiError for `exc`, counted in the metrics when it refuses a request."""
        err = as_api_error(exc)
        if self.metrics is not None and err.kind not in (ErrorKind.INTERNAL,
                                                         ErrorKind.MODEL_OUTPUT):
            self.metrics.rejected.labels(err.kind.name).inc()
        return err

    # ---- requests -----------------------------------------------------------------------------
    async def start_generate(self, p: GenerateParams) -> GenerateRun:
        self.check_accepting()
        self.check_name(p.model)
        prompt = await self._generate_prompt(p)
        self.check_prompt(prompt)
        vocab = self.info.config.vocab_size
        bad = [t for t in p.stop_token_ids if not 0 <= t < vocab]
        if bad:
            raise invalid(f"stop_token_ids: {bad[0]} is outside the vocabulary [0, {vocab})")
        max_new = self.max_new_tokens(len(prompt), p.max_tokens)
        sampler = make_sampler(p.sampling, max_new, p.stop, p.top_logprobs)
        if p.stop:
            self.need_tokenizer()
        eos = self.info.config.eos_token_id
        stops = frozenset(({eos} if eos is not None else set()) | set(p.stop_token_ids))
        stream = self.scheduler.submit(SeqRequest(prompt, sampler, max_new, stops))
        decoder = None
        if self.tokenizer is not None:
            from gptoss_edge.runtime.tokens.tokenizer import IncrementalDecoder
            decoder = IncrementalDecoder(self.tokenizer)
        return GenerateRun(stream, len(prompt), p.logprobs or p.top_logprobs > 0, decoder,
                           p.stop)

    async def _generate_prompt(self, p: GenerateParams) -> list[int]:
        if p.text is not None and p.token_ids is not None:
            raise invalid("prompt: set `text` or `tokens`, not both")
        if p.text is not None:
            if not p.text:
                raise invalid("text: empty prompt")
            return await self.encode("text", p.text)
        if p.token_ids is not None:
            return list(p.token_ids)
        raise invalid("prompt: set `text` or `tokens`")

    async def start_chat(self, p: ChatParams) -> ChatRun:
        self.check_accepting()
        self.check_name(p.model)
        tok = self.need_tokenizer()
        self.check_text_fits("messages", chat_turn.message_text(p))   # before rendering it
        prompt = await self.off_loop(chat_turn.render_request, p, tok)
        self.check_prompt(prompt)
        max_new = self.max_new_tokens(len(prompt), p.max_tokens)
        sampler = make_sampler(p.sampling, max_new, p.stop, p.top_logprobs)
        turn = chat_turn.ChatTurn(tok, p.stop)
        stream = self.scheduler.submit(SeqRequest(prompt, sampler, max_new, turn.stop_token_ids))
        return ChatRun(stream, len(prompt), p.logprobs or p.top_logprobs > 0, turn)

    async def tokenize(self, model: str, text: str) -> list[int]:
        self.check_name(model)
        return await self.encode("text", text)

    def detokenize(self, model: str, token_ids) -> str:
        self.check_name(model)
        tok = self.need_tokenizer()
        vocab = tok.vocab_size
        bad = next((t for t in token_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise invalid(f"token_ids: {bad} is outside the vocabulary [0, {vocab})")
        return tok.decode(list(token_ids))

    def status(self, model: str = "") -> ModelStatus:
        self.check_name(model)
        info, sched = self.info, self.scheduler
        return ModelStatus(
            name=self.name, target=info.target, vocab_size=info.config.vocab_size,
            max_context=info.max_context, num_layers=info.config.num_hidden_layers,
            kv_slots_total=sched.slots.total, kv_slots_used=sched.slots.used,
            kv_slots_free=sched.slots.free, queue_depth=sched.queue_depth,
            kv_bytes_per_token=info.kv_layout.full_bytes_per_token,
            max_step_tokens=info.max_step_tokens)
