"""Per-request state on the engine thread: prompt, limits, stop strings, usage, timing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from backends.base import Backend, BackendError, Delta, FimUnsupported
from server.engine.metrics import Metrics
from server.engine.requests import EventSink, Fim, FinishReason, GenerationRequest, TextDelta, Usage
from server.engine.scheduler import SeqState
from server.engine.stops import StopMatcher
from server.engine.thinking import CLOSES, ReasoningBudget, ends_open, template_variables
from server.errors import ContextLengthExceeded, InvalidRequest

OPEN_TAIL_TOKENS = 16  # prompt tokens detokenized to see whether it opened reasoning


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
    reasoning_open: bool = False  # the prompt ends inside the reasoning block
    budget: ReasoningBudget | None = None
    close_tokens: list[int] = field(default_factory=list)  # the budget's close text
    force_due: bool = False  # the budget is spent: the engine feeds close_tokens next

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
        self._emit(delta.text)
        if self.stops.stopped:
            return FinishReason.STOP
        if self.generated >= self.max_tokens:
            return FinishReason.LENGTH
        if self.budget is not None and self.budget.feed(delta.text):
            # Room for the close text and one answer token, else length ends it anyway.
            self.force_due = self.generated + len(self.close_tokens) < self.max_tokens
        return None

    def on_forced(self) -> FinishReason | None:
        """The close text was queued to be fed in place of a sample: it is output."""
        assert self.budget is not None
        self.force_due = False
        self.generated += len(self.close_tokens)
        self.budget.closed()
        self._emit(self.budget.close)
        return FinishReason.STOP if self.stops.stopped else None

    def _emit(self, raw: str) -> None:
        text = self.stops.feed(raw)
        if text:
            self.stream.push(TextDelta(text))

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
    if request.speculative and not backend.capabilities.drafters:
        raise InvalidRequest(
            "this model has no drafter for speculative decoding (see [speculative] in models.toml)",
            param="speculative",
        )
    variables = template_variables(request.template_kwargs, request.thinking, backend.capabilities)
    prompt = _prompt_tokens(request, backend, variables)
    if not prompt:
        raise InvalidRequest("the prompt is empty", param="prompt")
    active = Active(request, stream, prompt, 0, StopMatcher(request.stop), model=request.model)
    if request.messages is not None:
        _reasoning(active, backend)
        prompt = active.prompt
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
    active.max_tokens = max_tokens
    seq = SeqState(
        seq_id, len(prompt), max_tokens, priority=request.priority, elastic=elastic,
    )  # fmt: skip
    return active, seq


def _reasoning(active: Active, backend: Backend) -> None:
    """Whether the chat prompt opened the reasoning block; close it there where the
    request asked for no thinking or a budget of none; set up the budget (thinking
    "off" is a budget of none, for a model that opens the block itself)."""
    thinking, fmt = active.request.thinking, backend.capabilities.reasoning_format
    tail = backend.detokenize(active.prompt[-OPEN_TAIL_TOKENS:])
    active.reasoning_open = ends_open(tail, fmt)
    budget = 0 if thinking.mode == "off" else thinking.budget_tokens
    if fmt is None or budget is None:
        return
    if active.reasoning_open and budget == 0:
        active.prompt += backend.tokenize(CLOSES[fmt], add_special=False)
        active.reasoning_open = False
    if active.request.sampling.constraint is None:  # forced tokens would break a grammar
        active.budget = ReasoningBudget(fmt, budget, inside=active.reasoning_open)
        active.close_tokens = backend.tokenize(CLOSES[fmt], add_special=False)


def _prompt_tokens(
    request: GenerationRequest, backend: Backend, variables: dict[str, Any]
) -> list[int]:
    try:
        if request.messages is not None:
            return backend.chat_prompt(request.messages, request.tools, variables or None)
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
