"""Values that cross the thread boundary between the HTTP side and an engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from backends.base import ChatMessage, SamplingParams
from server.errors import HearthError


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request: exactly one of ``messages`` (chat) or ``prompt`` (text)."""

    request_id: str
    model: str
    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    arrival: float  # time.monotonic() when the HTTP request arrived
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    priority: int = 0


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


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class Failed:
    error: HearthError


Event = Accepted | TextDelta | Finished | Failed


class EventSink(Protocol):
    def push(self, event: Event) -> None:
        """Deliver an event to the request's HTTP side; callable from any thread."""
        ...
