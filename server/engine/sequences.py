"""Per-request state on the engine thread: prompt, limits, stop strings, usage, timing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from backends.base import Backend, BackendError, Delta, FimUnsupported
from server.engine.metrics import Metrics
from server.engine.requests import EventSink, Fim, FinishReason, GenerationRequest, TextDelta, Usage
from server.engine.scheduler import SeqState
from server.engine.stops import StopMatcher
from server.errors import ContextLengthExceeded, InvalidRequest


@dataclass(slots=True)
class Active:
    request: GenerationRequest
    stream: EventSink
    prompt: list[int]
    max_tokens: int
    stops: StopMatcher
    generated: int = 0
    cached: int = 0
    last_token_at: float | None = None
    model: str = field(default="")

    def on_admitted(self, cached: int, metrics: Metrics) -> None:
        self.cached = cached
        metrics.inc("hearth_prompt_tokens_total", len(self.prompt), model=self.model)
        if cached:
            metrics.inc("hearth_prefix_cache_hits_total", model=self.model)
            metrics.inc("hearth_prefix_cache_hit_tokens_total", cached, model=self.model)

    def on_delta(self, delta: Delta, metrics: Metrics) -> FinishReason | None:
        """Take one sampled token; return a finish reason when the sequence is done."""
        if delta.eog:
            return FinishReason.STOP
        self.generated += 1
        metrics.inc("hearth_generation_tokens_total", model=self.model)
        self._time_token(metrics)
        text = self.stops.feed(delta.text)
        if text:
            self.stream.push(TextDelta(text))
        if self.stops.stopped:
            return FinishReason.STOP
        if self.generated >= self.max_tokens:
            return FinishReason.LENGTH
        return None

    def _time_token(self, metrics: Metrics) -> None:
        now = time.monotonic()
        if self.last_token_at is None:
            ttft = now - self.request.arrival
            metrics.observe("hearth_time_to_first_token_seconds", ttft, model=self.model)
        else:
            itl = now - self.last_token_at
            metrics.observe("hearth_inter_token_latency_seconds", itl, model=self.model)
        self.last_token_at = now

    def usage(self) -> Usage:
        return Usage(len(self.prompt), self.generated, self.cached)


def prepare(
    seq_id: int,
    request: GenerationRequest,
    stream: EventSink,
    backend: Backend,
    default_max_tokens: int,
) -> tuple[Active, SeqState]:
    """Tokenize and check a request against the context; errors are HearthErrors."""
    constraint = request.sampling.constraint
    if constraint is not None:
        try:
            backend.check_constraint(constraint)
        except BackendError as exc:
            raise InvalidRequest(str(exc), param=request.constraint_param) from exc
    prompt = _prompt_tokens(request, backend)
    if not prompt:
        raise InvalidRequest("the prompt is empty", param="prompt")
    context = backend.capabilities.context_length
    where = "this model's context"
    if request.context_limit is not None and request.context_limit < context:
        context, where = request.context_limit, "this request's context window"
    room = context - len(prompt)
    elastic = request.max_tokens is None
    if request.max_tokens is not None and request.max_tokens_is_ceiling and room > 0:
        max_tokens = min(request.max_tokens, room)
        elastic = max_tokens > default_max_tokens
    elif request.max_tokens is not None:
        max_tokens = request.max_tokens
        if max_tokens > room:
            raise ContextLengthExceeded(
                f"{where} is {context} tokens; the prompt has {len(prompt)} and "
                f"max_tokens asks for {max_tokens} more ({len(prompt) + max_tokens} in all)",
                param="max_tokens" if room > 0 else "messages",
            )
    elif room < 1:
        raise ContextLengthExceeded(
            f"{where} is {context} tokens; the prompt has {len(prompt)}",
            param="messages" if request.messages is not None else "prompt",
        )
    else:
        max_tokens = min(room, default_max_tokens)
    active = Active(
        request, stream, prompt, max_tokens, StopMatcher(request.stop), model=request.model
    )
    seq = SeqState(
        seq_id, len(prompt), max_tokens, priority=request.priority, elastic=elastic,
    )  # fmt: skip
    return active, seq


def _prompt_tokens(request: GenerationRequest, backend: Backend) -> list[int]:
    try:
        if request.messages is not None:
            return backend.chat_prompt(request.messages, request.tools)
        if request.fim is not None:
            return _fim_tokens(request.fim, backend)
        return backend.tokenize(request.prompt or "", add_special=True)
    except FimUnsupported as exc:
        raise InvalidRequest(str(exc), param="model", code="fim_not_supported") from exc
    except BackendError as exc:
        raise InvalidRequest(str(exc), param="messages") from exc


def _fim_tokens(fim: Fim, backend: Backend) -> list[int]:
    tokens = backend.fim_prompt(fim.prefix, fim.suffix, fim.extra)
    if fim.middle:
        tokens += backend.tokenize(fim.middle, add_special=False)
    return tokens
