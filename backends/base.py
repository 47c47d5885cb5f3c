"""The backend plugin protocol.

A backend is the mechanism: it owns a loaded model, its tokenizer and chat template, and
a batch of sequences that it advances one forward pass at a time. It knows nothing of
HTTP, queues or policy; the engine thread in ``server.engine`` is its only caller, so a
backend need not be thread-safe.

Third parties add a backend by exposing a :class:`BackendPlugin` under the
``hearth.backends`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class BackendError(Exception):
    """A backend failed; the message is safe to show a client."""


class ModelLoadError(BackendError):
    """The model could not be loaded (missing, corrupt, unsupported, out of memory)."""


class TemplateError(BackendError):
    """The chat template could not be rendered for these messages."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-sequence sampling, validated by the HTTP layer before it gets here."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    ignore_eos: bool = False  # never end at an end-of-generation token (benchmarks)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Work:
    """One sequence's share of a step: feed ``n_tokens`` of its pending input.

    For a sequence still in prefill these are prompt tokens (a chunk); for a decoding
    sequence it is the one token sampled last step. ``sample`` asks for a new token
    from the logits of the last position fed.
    """

    seq_id: int
    n_tokens: int
    sample: bool


@dataclass(frozen=True, slots=True)
class Delta:
    """What one step produced for one sequence.

    ``text`` is whole characters only: bytes of a character split across tokens are
    held back until the character is complete. ``eog`` marks an end-of-generation token,
    whose text is never included.
    """

    seq_id: int
    token: int
    text: str
    eog: bool


@dataclass(frozen=True, slots=True)
class StepFailure:
    """The forward pass failed for these sequences; the backend has already dropped them."""

    seq_ids: tuple[int, ...]
    message: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a loaded model can do, for routing and for refusing what it cannot."""

    context_length: int
    max_sequences: int
    vocab_size: int
    chat_template: bool
    fim: bool = False
    gpu_offload: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A loaded model serving a batch of sequences."""

    capabilities: Capabilities

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Tokenize ``text``; special tokens written in the text are parsed as such."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Turn tokens back into text (special tokens rendered)."""
        ...

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Render messages with the model's chat template and the generation prompt,
        and tokenize the result (adding BOS only where the template did not).

        Raises :class:`TemplateError` when there is no template or it rejects the
        conversation.
        """
        ...

    def add(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        """Start a sequence with its prompt tokens and sampling.

        Returns how many leading prompt tokens were already in the KV cache (prefix
        reuse); the caller then feeds only the rest through :meth:`step`. At least one
        token is always left to feed, so the first sample has fresh logits.
        """
        ...

    def step(self, work: Sequence[Work]) -> tuple[list[Delta], list[StepFailure]]:
        """Run one forward pass over every sequence's share of work, then sample.

        Returns one :class:`Delta` per work item with ``sample`` set, and the failures.
        """
        ...

    def release(self, seq_id: int) -> None:
        """End a sequence (finished or aborted) and free its KV, or keep it as a
        reusable prefix where the backend caches prefixes. Idempotent."""
        ...

    def kv_cache_used(self) -> int:
        """KV cells in use now, prefix cache included."""
        ...

    def close(self) -> None:
        """Free the model and every native resource. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """Everything a plugin needs to load one model, from models.toml."""

    name: str
    path: Path
    context_length: int
    max_sequences: int
    threads: int
    gpu_layers: int | None
    tensor_split: tuple[float, ...] | None
    chat_template: str | None
    batch_tokens: int
    options: Mapping[str, Any] = field(default_factory=dict)


class BackendPlugin(Protocol):
    """The entry-point object of a backend: availability and loading."""

    name: str

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run here, else why not and what to install."""
        ...

    def accepts(self, path: Path) -> bool:
        """Whether this backend reads the model at ``path`` (by format)."""
        ...

    def load(self, request: LoadRequest) -> Backend:
        """Load the model. Raises :class:`ModelLoadError` with a clear message."""
        ...
