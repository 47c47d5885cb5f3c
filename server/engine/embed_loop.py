"""The engine of an embedding or reranking model (models.toml ``task = "embed"`` or
``"rerank"``): the same thread (or runner process) and inbox as a generating model's
:class:`~server.engine.loop.Engine`, with passes instead of decode steps.

A request's inputs are tokenized (a rerank's documents each paired with the query in
the model's own form) and checked against the model's limit per input when it arrives,
so a refusal comes before its response starts. Each iteration takes commands, asks the
:class:`~server.engine.embed_scheduler.EmbedScheduler` for a pass (inputs of every
waiting request, up to the model's batch), and runs it as one forward pass through
``Backend.embed``. A request whose last input is embedded ends with one
:class:`~server.engine.requests.Embedded` event holding its vectors in order.
"""

from __future__ import annotations

import logging
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from backends.base import Backend, BackendError, Capabilities
from server.engine.embed_scheduler import EmbedJob, EmbedScheduler, Piece
from server.engine.inbox import Prepared, Submit
from server.engine.loop import MAX_STEP_ERRORS, Engine, wrong_kind
from server.engine.requests import (
    Accepted,
    Admitted,
    Embedded,
    EmbeddingRequest,
    EventSink,
    Failed,
)
from server.errors import (
    ContextLengthExceeded,
    HearthError,
    InternalError,
    InvalidRequest,
    ModelUnavailable,
)

log = logging.getLogger("hearth.engine")
# The tokens a pass of several inputs fills to. An encoder's attention in llama.cpp spans
# every token of the pass, so short inputs embed faster in passes of 256 tokens than of
# 512 (all-MiniLM, 2 CPU threads: 4% more texts a second for inputs of 15 to 50
# tokens; the same for a 0.5B decoder); a longer input still goes whole, alone.
PASS_TOKENS = 256


@dataclass(slots=True)
class _Job:
    request: EmbeddingRequest
    stream: EventSink
    inputs: list[list[int]]
    vectors: list[array[float] | None]


class EmbedEngine(Engine):
    """An embedding or reranking model's engine (see the module docstring)."""

    def _setup(self, caps: Capabilities) -> None:
        self._embeds = EmbedScheduler(
            batch_tokens=max(self._load.batch_tokens, caps.max_sequences),
            max_inputs=caps.max_sequences,
            max_waiting=self._max_waiting,
            pass_tokens=PASS_TOKENS,
        )
        self._jobs: dict[int, _Job] = {}
        self._job_of: dict[str, int] = {}

    def _run(self, backend: Backend) -> None:
        while True:
            if not self._drain(block=not self._embeds.has_work()):
                self._fail_all(ModelUnavailable("the server is shutting down", retry_after=5))
                return
            pieces = self._embeds.plan()
            if pieces:
                self._pass(backend, pieces)
            self._metrics.set("hearth_requests_running", len(self._jobs) - self._embeds.waiting(),
                              model=self.name)  # fmt: skip
            self._metrics.set("hearth_requests_waiting", self._embeds.waiting(), model=self.name)

    def _pass(self, backend: Backend, pieces: list[Piece]) -> None:
        """One forward pass. If it fails, the requests in it fail and the next pass runs;
        a backend that keeps raising something other than a failed pass is broken, and
        the engine dies (as for a generation step)."""
        for key in dict.fromkeys(p.key for p in pieces if p.index == 0):
            self._jobs[key].stream.push(Admitted(0))  # its first input is under way
        keys = list(dict.fromkeys(p.key for p in pieces))
        try:
            vectors = backend.embed([self._jobs[p.key].inputs[p.index] for p in pieces])
        except BackendError as exc:
            log.error("an embedding pass failed: %s", exc)
            for key in keys:
                self._finish(key, InternalError(str(exc)))
            return
        except Exception:
            self._step_errors += 1
            log.exception("an embedding pass failed (%d in a row)", self._step_errors)
            if self._step_errors >= MAX_STEP_ERRORS:
                raise
            for key in keys:
                self._finish(key, InternalError("the model failed on this batch"))
            return
        self._step_errors = 0
        self._count(pieces)
        for piece, vector in zip(pieces, vectors, strict=True):
            job = self._jobs[piece.key]
            job.vectors[piece.index] = _shape(vector, job.request.dimensions, self._load.normalize)
        for done in self._embeds.advance(pieces):
            self._finish(done.key)

    def _count(self, pieces: list[Piece]) -> None:
        m, name = self._metrics, self.name
        m.inc("hearth_steps_total", model=name)
        m.inc("hearth_step_sequences_total", len(pieces), model=name)
        m.inc("hearth_embedding_inputs_total", len(pieces), model=name)
        m.inc("hearth_embedding_tokens_total", sum(p.n_tokens for p in pieces), model=name)
        if len(pieces) > self._widest_step:
            self._widest_step = len(pieces)
            m.set("hearth_step_sequences_max", len(pieces), model=name)

    def _finish(self, key: int, error: HearthError | None = None) -> None:
        """End a job: its vectors, or ``error``."""
        self._embeds.finish(key)
        job = self._jobs.pop(key)
        self._job_of.pop(job.request.request_id, None)
        outcome = "embedded" if error is None else "error"
        self._metrics.inc("hearth_requests_total", model=self.name, finish_reason=outcome)
        if error is not None:
            job.stream.push(Failed(error))
            return
        vectors = tuple(v for v in job.vectors if v is not None)
        job.stream.push(Embedded(vectors, sum(len(t) for t in job.inputs)))

    # -- the inbox -------------------------------------------------------------------

    def _prepare(self, item: Submit) -> None:
        assert self.backend is not None
        if not isinstance(item.request, EmbeddingRequest):
            self._reject(item, wrong_kind(self.name, f"is loaded to {self._load.task}"))
            return
        key, self._next_seq = self._next_seq, self._next_seq + 1
        size = _text_size(item.request)
        self._prepare_with(item, key, size, prepare, item.request, self.backend)

    def _queue(self, prepared: Prepared) -> None:
        item, key = prepared.submit, prepared.seq_id
        assert isinstance(item.request, EmbeddingRequest)
        inputs: list[list[int]] = prepared.future.result()
        self._embeds.add(EmbedJob(key, tuple(len(t) for t in inputs)))
        self._jobs[key] = _Job(item.request, item.stream, inputs, [None] * len(inputs))
        self._job_of[item.request.request_id] = key
        item.stream.push(Accepted(sum(len(t) for t in inputs)))

    def _abort(self, request_id: str) -> None:
        if self._preparing.pop(request_id, None) is not None:
            return
        key = self._job_of.pop(request_id, None)
        if key is not None:
            self._embeds.finish(key)
            self._jobs.pop(key, None)
            self._metrics.inc("hearth_requests_total", model=self.name, finish_reason="aborted")

    def _fail_all(self, error: HearthError) -> None:
        preparing, self._preparing = self._preparing, {}
        for item in preparing.values():
            item.stream.push(Failed(error))
        for key in list(self._jobs):
            self._finish(key, error)


def prepare(request: EmbeddingRequest, backend: Backend) -> list[list[int]]:
    """Each input's tokens, within the limit per input (cut to it where the request
    allows); errors are HearthErrors naming the input."""
    caps = backend.capabilities
    limit, where = caps.context_length, "this model's limit per input"
    if request.context_limit is not None and request.context_limit < limit:
        limit, where = request.context_limit, "this request's context window"
    if request.dimensions is not None and request.dimensions > caps.embedding_size:
        raise InvalidRequest(f"'dimensions' is at most {caps.embedding_size} for this model",
                             param="dimensions")  # fmt: skip
    many = len(request.inputs) > 1
    out = []
    for i, item in enumerate(request.inputs):
        param = f"{request.param}[{i}]" if many else request.param
        tokens = _tokens(item, request, backend, param)
        if not tokens:
            raise InvalidRequest(f"'{param}' is empty", param=param)
        if len(tokens) > limit:
            if not request.truncate:
                raise ContextLengthExceeded(
                    f"'{param}' has {len(tokens)} tokens and {where} is {limit}", param=param
                )
            tokens = tokens[:limit]
        out.append(tokens)
    return out


def _tokens(
    item: str | tuple[int, ...], request: EmbeddingRequest, backend: Backend, param: str
) -> list[int]:
    if isinstance(item, tuple):
        vocab = backend.capabilities.vocab_size
        if any(not 0 <= t < vocab for t in item):
            raise InvalidRequest(f"'{param}' holds a token id outside the model's vocabulary "
                                 f"(0 to {vocab - 1})", param=param)  # fmt: skip
        return list(item)
    if request.query is not None:
        return backend.rerank_prompt(request.query, item)
    return backend.tokenize(item, add_special=True)


def _text_size(request: EmbeddingRequest) -> int:
    size = sum(len(x) if isinstance(x, str) else 0 for x in request.inputs)
    return size + len(request.query or "") * len(request.inputs)


def _shape(vector: Sequence[float], dimensions: int | None, normalize: bool) -> array[float]:
    """A float32 vector, cut to its first ``dimensions`` (and scaled to unit length
    again where the model's vectors are normalised)."""
    if dimensions is None or dimensions >= len(vector):
        return array("f", vector)
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) if normalize else 0.0
    return array("f", (x / norm for x in head) if norm > 0 else head)
