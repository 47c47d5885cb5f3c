"""The backend plugin protocol.

A backend is the mechanism: it owns a loaded model, its tokenizer and chat template, and
a batch of sequences that it advances one forward pass at a time. It knows nothing of
HTTP, queues or policy; the engine thread in ``server.engine.loop`` is its only caller, so a
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


class FimUnsupported(BackendError):
    """The model has no fill-in-the-middle tokens."""


class OutOfMemory(BackendError):
    """No memory for this sequence now; it may fit once running sequences finish."""


class GrammarError(BackendError):
    """A JSON schema or grammar was refused (too deep, too big, recursive, unparsable)."""


class TaskUnsupported(BackendError):
    """This backend or model cannot do what was asked (embeddings on a backend without
    them, a generation step on an embedding model)."""


# The drafters a model may speculate with: prompt lookup (n-grams of the prompt and the
# output so far) and a smaller draft model with the same tokenizer.
NGRAM, DRAFT_MODEL = "ngram", "model"
DRAFTERS = (NGRAM, DRAFT_MODEL)


# What a model is loaded for (models.toml's ``task``), and how an embedding model pools
# its tokens' hidden states into one vector (``pooling``; ``rank``: a reranker's score).
GENERATE, EMBED, RERANK = "generate", "embed", "rerank"
TASKS = (GENERATE, EMBED, RERANK)
POOLINGS = ("mean", "cls", "last", "rank")


@dataclass(frozen=True, slots=True)
class Constraint:
    """Constrain a sequence's output: a JSON object (``schema`` None) or JSON matching a
    JSON schema (its JSON text), between the literal texts ``before`` and ``after``
    (a tool call's tags). Hashable, so compiled grammars are cached by it."""

    schema: str | None = None
    before: str = ""
    after: str = ""


# The sampling settings a request or models.toml may set, with their ranges (OpenAI's
# where it has one); the integer ones must be whole numbers.
SAMPLING_RANGES: Mapping[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "top_k": (0, 100_000),
    "seed": (-(2**63), 2**63 - 1),
}
INTEGER_SAMPLING = frozenset({"top_k", "seed"})


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
    constraint: Constraint | None = None  # checked by Backend.check_constraint first

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the assistant made; ``arguments`` is JSON text as generated."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is its JSON schema as JSON text."""

    name: str
    description: str = ""
    parameters: str = "{}"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message's calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None
    reasoning: str | None = None  # an assistant message's thinking, as a client sent it back


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
    # Speculation: the most draft tokens the backend may guess after the last one fed
    # and verify in this same pass (see :meth:`Backend.step`); 0: none.
    draft: int = 0


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
    # The last delta of a speculative step for this sequence: how many draft tokens were
    # verified, how many of them were accepted, and which drafter guessed them.
    drafted: int = 0
    accepted: int = 0
    drafter: str = ""


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
    # The model's output formats (server.engine.parsers names), from its chat template
    # and architecture or models.toml: None where it has none.
    reasoning_format: str | None = None
    tool_format: str | None = None
    # The variables the chat template reads beyond the messages (enable_thinking,
    # reasoning_effort, ...): the engine passes a request's thinking through them.
    template_variables: frozenset[str] = frozenset()
    # An embedding or reranking model: how it pools (POOLINGS), and the length of what
    # :meth:`Backend.embed` returns per input (a reranker's: its scores, usually one).
    # For these ``context_length`` is the most tokens one input may have and
    # ``max_sequences`` the most inputs one forward pass embeds.
    pooling: str | None = None
    embedding_size: int = 0
    # The drafters this model can speculate with (DRAFTERS names), in the order tried.
    drafters: tuple[str, ...] = ()


class Backend(Protocol):
    """A loaded model serving a batch of sequences."""

    capabilities: Capabilities

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Tokenize ``text``; special tokens written in the text are parsed as such."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Turn tokens back into text (special tokens rendered)."""
        ...

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] = (),
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Render messages (and the tools the model may call, in the template's own
        way) with the model's chat template and the generation prompt, and tokenize the
        result (adding BOS only where the template did not). ``template_kwargs`` are
        extra template variables (``enable_thinking``); an assistant message's
        ``reasoning`` is given to the template, which keeps or drops it.

        Raises :class:`TemplateError` when there is no template or it rejects the
        conversation.
        """
        ...

    def fim_prompt(
        self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()
    ) -> list[int]:
        """Build the model's own fill-in-the-middle prompt from its FIM token ids:
        prefix token, ``prefix``, suffix token, ``suffix``, middle token.

        ``extra`` is context from other files, ``(filename, text)`` pairs, placed before
        the prefix token (with the repo and file-separator tokens where the model has
        them). Text is tokenized without parsing special tokens, so a file cannot forge
        one. Raises :class:`FimUnsupported` when the model has no FIM tokens.
        """
        ...

    def check_constraint(self, constraint: Constraint) -> None:
        """Compile ``constraint`` to the backend's grammar (cached) and check that the
        backend accepts it, before the sequence is queued. Raises :class:`GrammarError`
        with a message safe to show the client."""
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
        A work item with ``draft`` > 0 may also have up to that many draft tokens guessed
        (by the model's drafters) and verified in the same pass: its deltas are then the
        draft tokens the model's own sampling chose, in order, and the token sampled
        after the last of them (from 1 to ``draft + 1`` deltas), the last carrying the
        counts. Each position is sampled with the sequence's own sampler and a draft
        token is kept only where the sample equals it, so the output is what the model
        would have written without speculation, sampled ones too, seeds included.
        """
        ...

    def force(self, seq_id: int, tokens: Sequence[int]) -> None:
        """Queue ``tokens`` after the sequence's last sampled token, fed as if it had
        sampled them (the engine ends a reasoning block early with its close tag). The
        scheduler counts them in the sequence's next :class:`Work`, which feeds them with
        that token and samples after the last; their text is the engine's to output."""
        ...

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """An embedding or reranking model: run ``inputs`` (each already within
        ``capabilities.context_length``, together within the batch the model was loaded
        with and at most ``max_sequences`` of them) through one forward pass, each its
        own sequence, and return one pooled vector per input, in order: normalised where
        the model was loaded with ``normalize``; a reranker's relevance score(s) from 0
        to 1. Nothing stays in the KV cache. Raises :class:`TaskUnsupported` on a model
        loaded to generate, :class:`BackendError` when the forward pass fails."""
        ...

    def rerank_prompt(self, query: str, document: str) -> list[int]:
        """A reranker's input for one (query, document) pair, in the model's own form:
        its rerank template where the model has one, else the query and the document
        between its BOS, EOS and separator tokens. Text is tokenized without parsing
        special tokens. Raises :class:`TaskUnsupported` on a model that does not rerank."""
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
    gpu_memory_limit: int | None = None  # bytes of GPU memory the model may use
    kv_cache_type: str = "f16"  # "f16", "q8_0" or "q4_0"
    main_gpu: int = 0
    weight_repack: bool | None = None  # llama.cpp extra CPU buffer types; None: auto
    prompt_cache: PromptCache | None = None  # saved prompt state beyond the live KV
    # models.toml's reasoning_parser / tool_parser: a format name, "none", or None to
    # take what backends.formats detects
    reasoning_parser: str | None = None
    tool_parser: str | None = None
    task: str = GENERATE  # one of TASKS
    pooling: str | None = None  # one of POOLINGS; None: the model's own (its metadata)
    normalize: bool = False  # an embedding model's vectors scaled to unit length
    rpc_workers: tuple[str, ...] = ()  # llama.cpp RPC workers ("HOST:PORT") to offload to
    speculative: Speculative | None = None  # None: no speculation


@dataclass(frozen=True, slots=True)
class Speculative:
    """Speculative decoding for a model (models.toml ``[speculative]``): the drafters the
    backend loads, and the engine's limits on using them."""

    # The drafters, in the order tried; None: what the backend can do unasked (prompt
    # lookup where it can roll back draft tokens, else none). A drafter named here that
    # the backend cannot load is refused at load.
    drafters: tuple[str, ...] | None = None
    draft_model: Path | None = None  # DRAFT_MODEL's GGUF
    ngram_min: int = 2  # the shortest n-gram a lookup matches (the longest first)
    ngram_max: int = 4
    max_draft: int = 16  # draft tokens one sequence may verify in one step
    # Decoding sequences above which no sequence drafts; 0: the step costs decide alone.
    max_batch: int = 0


@dataclass(frozen=True, slots=True)
class PromptCache:
    """Where and how much prompt state a backend may save (backends.prompt_store)."""

    directory: Path | None  # the disk tier's folder; None: RAM only
    ram_bytes: int
    disk_bytes: int
    identity: str  # the model file's identity (sha256, size, mtime): part of the key


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
