"""Values that cross the thread boundary between the HTTP side and an engine."""

from __future__ import annotations

import enum
from array import array
from dataclasses import dataclass
from typing import Protocol

from backends.base import ChatMessage, SamplingParams, Tool, ToolCall
from server.errors import HearthError


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"


INTERACTIVE = 1  # the priority of requests a person waits on: IDE completions


@dataclass(frozen=True, slots=True)
class Fim:
    """A fill-in-the-middle prompt: the backend builds it from its FIM tokens.

    ``middle`` is text placed after the middle token (llama-server's infill ``prompt``);
    ``extra`` holds ``(filename, text)`` context from other files.
    """

    prefix: str
    suffix: str
    extra: tuple[tuple[str, str], ...] = ()
    middle: str = ""


@dataclass(frozen=True, slots=True)
class Thinking:
    """What a request asks of a reasoning model's thinking, whichever dialect said it
    (``chat_template_kwargs.enable_thinking``, ``reasoning_effort``, Responses'
    ``reasoning.effort``, Anthropic's ``thinking``, Ollama's ``think``)."""

    mode: str = "auto"  # "auto": as the template does; "on": demanded; "off": asked not to
    effort: str | None = None  # "low", "medium" or "high", where the template takes it
    budget_tokens: int | None = None  # thinking is ended after this many tokens


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request: exactly one of ``messages`` (chat), ``prompt`` (text) or
    ``fim`` (fill in the middle)."""

    request_id: str
    model: str
    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    arrival: float  # time.monotonic() when the HTTP request arrived
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    fim: Fim | None = None
    priority: int = 0  # INTERACTIVE is admitted and prefilled before the rest
    constraint_param: str = "response_format"  # the field named when it is refused
    tools: tuple[Tool, ...] = ()  # offered to the model; its calls are parsed from the text
    # Anthropic's max_tokens: the most the client takes, not a promise of room. Capped to
    # the context; above the model's default_max_tokens it holds a fair share and grows.
    max_tokens_is_ceiling: bool = False
    parallel_tool_calls: bool = True  # False: one call at most (``stop`` ends at its close tag)
    # A smaller window than the model's for prompt plus answer (Ollama's num_ctx); a
    # larger one changes nothing.
    context_limit: int | None = None
    # Seconds the client asks the model to stay loaded after this request (Ollama's
    # keep_alive; math.inf: for good, 0: unload). Kept for model residency; no effect yet.
    keep_alive: float | None = None
    thinking: Thinking = Thinking()
    # Extra variables for the chat template (chat_template_kwargs), values as JSON text.
    template_kwargs: tuple[tuple[str, str], ...] = ()
    # Speculative decoding (the ``speculative`` extension): False: never for this
    # request; True: asked for (refused where the model has no drafter); None: the model's.
    speculative: bool | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated request for an embedding model's vectors of ``inputs`` (texts, or
    token ids taken as they are), or, with ``query``, a reranker's relevance score of
    each input as a document for that query."""

    request_id: str
    model: str
    inputs: tuple[str | tuple[int, ...], ...]
    arrival: float  # time.monotonic() when the HTTP request arrived
    query: str | None = None  # a rerank: the inputs are its documents
    truncate: bool = False  # an input over the limit is cut to it, not refused
    context_limit: int | None = None  # a smaller limit per input (Ollama's num_ctx)
    dimensions: int | None = None  # keep a vector's first dimensions (a matryoshka model)
    keep_alive: float | None = None  # as GenerationRequest's
    param: str = "input"  # the field named when an input is refused


# What an engine serves; the kind must match the model's task.
EngineRequest = GenerationRequest | EmbeddingRequest


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Accepted:
    """Validated and queued; the response may start."""

    prompt_tokens: int
    # The prompt ends inside the model's reasoning block (its template opened it, as
    # DeepSeek-R1's does): the answer's text starts as reasoning.
    reasoning_open: bool = False


@dataclass(frozen=True, slots=True)
class Admitted:
    """Running: its prefill starts, ``cached_tokens`` of the prompt reused."""

    cached_tokens: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning (its thinking), apart from the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The ``index``-th tool call of the answer has begun: its id and name are known."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArguments:
    """The next piece of the ``index``-th call's arguments (JSON text), as generated."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A complete tool call parsed from the text, the ``index``-th of the answer.

    It ends the call. When :class:`ToolCallStarted` and :class:`ToolCallArguments`
    came before it, ``call.id`` is the started id and ``call.arguments`` begins with the
    arguments streamed so far: a streaming renderer sends only what is left of them."""

    index: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None  # the stop string that ended it, if one did


@dataclass(frozen=True, slots=True)
class Embedded:
    """The last event of an embedding request: one float32 vector per input, in order
    (a reranker's: its relevance score, from 0 to 1, first), and the tokens read."""

    vectors: tuple[array[float], ...]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: HearthError


Event = (
    Accepted
    | Admitted
    | TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallArguments
    | ToolCallDelta
    | Finished
    | Embedded
    | Failed
)


class EventSink(Protocol):
    def push(self, event: Event) -> None:
        """Deliver an event to the request's HTTP side; callable from any thread."""
        ...
