"""A fake backend for fast tests of the engine, scheduler and HTTP layer.

Its "model" answers a chat by echoing the last message's content byte by byte (so
multi-byte characters are split across tokens), then ends with an end-of-generation
token. A completion prompt is echoed the same way; a fill-in-the-middle prompt echoes
its suffix (model "beta" has no FIM tokens). Token ids are byte values; the
end-of-generation token is 256. It records each step's work and each FIM call.

Loaded with ``task = "embed"`` it embeds an input as the counts of its bytes by value
mod 8; with ``"rerank"`` a (query, document) pair scores the share of the document's
words that the query holds. It records each embedding pass's input lengths.

Loaded with ``speculative`` drafters it speculates with the drafter "ngram": its guess is the
reply's next tokens, but for the token at ``draft_wrong_at`` in each draft (None: none),
so a step of ``draft`` k yields the tokens before the wrong one and one more.

Its reasoning format is models.toml's ``reasoning_parser``, and its template reads
``enable_thinking``. Forced tokens that the reply holds further on make it go on from
after them, as a model would answer after a forced close tag.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.base import (
    EMBED,
    GENERATE,
    NGRAM,
    RERANK,
    Backend,
    Capabilities,
    ChatMessage,
    Constraint,
    Delta,
    FimUnsupported,
    LoadRequest,
    ModelLoadError,
    SamplingParams,
    StepFailure,
    TaskUnsupported,
    Tool,
    Work,
)
from backends.llamacpp.grammars import to_gbnf
from backends.text import Utf8Stream

EOG = 256
SEP = 0  # separates the reply from the rest of the prompt
EMBED_SIZE = 8


@dataclass
class _Seq:
    reply: list[int]
    pending: int
    produced: int = 0
    text: Utf8Stream = field(default_factory=Utf8Stream)


class FakeBackend:
    def __init__(self, request: LoadRequest) -> None:
        self.task = request.task
        pooled = request.task != GENERATE
        batch = max(request.batch_tokens, request.max_sequences)
        self.capabilities = Capabilities(
            context_length=min(request.context_length, batch) if pooled else request.context_length,
            max_sequences=request.max_sequences,
            vocab_size=257,
            chat_template=True,
            fim=request.name != "beta",
            reasoning_format=request.reasoning_parser,
            template_variables=frozenset({"enable_thinking"}),
            pooling=(request.pooling or "mean") if pooled else None,
            embedding_size={EMBED: EMBED_SIZE, RERANK: 1}.get(request.task, 0),
            # Only where asked for: a fake that emits a whole draft a step would race
            # through the tests that count on one token a step.
            drafters=(NGRAM,) if request.speculative and request.speculative.drafters else (),
        )
        self.draft_wrong_at: int | None = None
        self.normalize = request.normalize
        self.passes: list[list[int]] = []  # each embedding pass: its inputs' lengths
        self.template_kwargs: list[Mapping[str, Any] | None] = []
        self.forced: list[tuple[int, list[int]]] = []
        self.fim_calls: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
        self.grammars: list[str] = []
        self.tools_seen: list[tuple[Tool, ...]] = []
        self.steps: list[list[Work]] = []
        self.released: list[int] = []
        self.fail_next_step = False
        self.raise_steps = 0
        self._seqs: dict[int, _Seq] = {}
        self.closed = False
        self.gate = threading.Event()  # clear it to hold every step
        self.gate.set()

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return list(text.encode())

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(t for t in tokens if t < 256).decode("utf-8", "replace")

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] = (),
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        self.tools_seen.append(tuple(tools))
        self.template_kwargs.append(template_kwargs)
        head = "".join(f"<{m.role}>{m.content}" for m in messages[:-1]).encode()
        return [*head, SEP, *messages[-1].content.encode()]

    def check_constraint(self, constraint: Constraint) -> None:
        self.grammars.append(to_gbnf(constraint))

    def fim_prompt(
        self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()
    ) -> list[int]:
        if not self.capabilities.fim:
            raise FimUnsupported("this model has no fill-in-the-middle tokens")
        self.fim_calls.append((prefix, suffix, tuple(extra)))
        head = "".join(f"<{name}>{text}" for name, text in extra) + prefix
        return [*head.encode(), SEP, *suffix.encode()]

    def add(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        reply = list(prompt)[list(prompt).index(SEP) + 1 :] if SEP in prompt else list(prompt)
        self._seqs[seq_id] = _Seq(reply, pending=len(prompt))
        return 0

    def step(self, work: Sequence[Work]) -> tuple[list[Delta], list[StepFailure]]:
        self.gate.wait(10)
        self.steps.append(list(work))
        if self.raise_steps:
            self.raise_steps -= 1
            raise RuntimeError("boom")
        if self.fail_next_step:
            self.fail_next_step = False
            ids = tuple(w.seq_id for w in work)
            for seq_id in ids:
                self._seqs.pop(seq_id, None)
            return [], [StepFailure(ids, "decode failed")]
        deltas = []
        for w in work:
            seq = self._seqs[w.seq_id]
            seq.pending = max(0, seq.pending - w.n_tokens)
            if w.draft:
                deltas += self._speculate(w.seq_id, seq, w.draft)
            elif w.sample:
                deltas.append(self._next(w.seq_id, seq))
        return deltas, []

    def _speculate(self, seq_id: int, seq: _Seq, k: int) -> list[Delta]:
        draft = seq.reply[seq.produced : seq.produced + k]
        deltas = []
        for i in range(len(draft) + 1):
            deltas.append(self._next(seq_id, seq))
            if deltas[-1].eog or i == len(draft) or i == self.draft_wrong_at:
                break
        accepted = len(deltas) - 1
        last = deltas[-1]
        deltas[-1] = Delta(last.seq_id, last.token, last.text, last.eog, drafted=len(draft),
                           accepted=accepted, drafter=NGRAM)  # fmt: skip
        return deltas

    def _next(self, seq_id: int, seq: _Seq) -> Delta:
        if seq.produced >= len(seq.reply):
            return Delta(seq_id, EOG, seq.text.flush(), eog=True)
        token = seq.reply[seq.produced]
        seq.produced += 1
        return Delta(seq_id, token, seq.text.feed(bytes([token])), eog=False)

    def force(self, seq_id: int, tokens: Sequence[int]) -> None:
        self.forced.append((seq_id, list(tokens)))
        seq = self._seqs[seq_id]
        seq.pending += len(tokens)
        n = len(tokens)
        for i in range(seq.produced, len(seq.reply) - n + 1):
            if seq.reply[i : i + n] == list(tokens):
                seq.produced = i + n
                break

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """An input's vector counts its bytes by value mod EMBED_SIZE (normalised where
        the model normalises); a rerank pair's score is the share of the document's words
        found in the query."""
        if self.task == GENERATE:
            raise TaskUnsupported("this model generates text")
        self.gate.wait(10)
        self.passes.append([len(t) for t in inputs])
        if self.raise_steps:
            self.raise_steps -= 1
            raise RuntimeError("boom")
        if self.task == RERANK:
            return [[_overlap(list(t))] for t in inputs]
        return [_histogram(t, self.normalize) for t in inputs]

    def rerank_prompt(self, query: str, document: str) -> list[int]:
        if self.task != RERANK:
            raise TaskUnsupported("this model is not a reranker")
        return [*query.encode(), SEP, *document.encode()]

    def release(self, seq_id: int) -> None:
        self.released.append(seq_id)
        self._seqs.pop(seq_id, None)

    def kv_cache_used(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def _histogram(tokens: Sequence[int], normalize: bool) -> list[float]:
    counts = [0.0] * EMBED_SIZE
    for t in tokens:
        counts[t % EMBED_SIZE] += 1.0
    norm = math.sqrt(sum(c * c for c in counts)) if normalize else 1.0
    return [c / norm for c in counts]


def _overlap(pair: list[int]) -> float:
    query, document = bytes(pair[: pair.index(SEP)]), bytes(pair[pair.index(SEP) + 1 :])
    words = set(document.split())
    return len(words & set(query.split())) / len(words) if words else 0.0


class FakePlugin:
    name = "fake"

    def __init__(self) -> None:
        self.loaded: list[FakeBackend] = []

    def unavailable_reason(self) -> str | None:
        return None

    def accepts(self, path: Path) -> bool:
        return path.suffix == ".fake"

    def load(self, request: LoadRequest) -> Backend:
        if "missing" in request.path.name:
            raise ModelLoadError(f"cannot open model file {request.path}")
        backend = FakeBackend(request)
        self.loaded.append(backend)
        return backend
