"""A fake backend for fast tests of the engine, scheduler and HTTP layer.

Its "model" answers a chat by echoing the last message's content byte by byte (so
multi-byte characters are split across tokens), then ends with an end-of-generation
token. A completion prompt is echoed the same way; a fill-in-the-middle prompt echoes
its suffix (model "beta" has no FIM tokens). Token ids are byte values; the
end-of-generation token is 256. It records each step's work and each FIM call.

Its reasoning format is models.toml's ``reasoning_parser``, and its template reads
``enable_thinking``. Forced tokens that the reply holds further on make it go on from
after them, as a model would answer after a forced close tag.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.base import (
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
    Tool,
    Work,
)
from backends.llamacpp.grammars import to_gbnf
from backends.text import Utf8Stream

EOG = 256
SEP = 0  # separates the reply from the rest of the prompt


@dataclass
class _Seq:
    reply: list[int]
    pending: int
    produced: int = 0
    text: Utf8Stream = field(default_factory=Utf8Stream)


class FakeBackend:
    def __init__(self, request: LoadRequest) -> None:
        self.capabilities = Capabilities(
            context_length=request.context_length,
            max_sequences=request.max_sequences,
            vocab_size=257,
            chat_template=True,
            fim=request.name != "beta",
            reasoning_format=request.reasoning_parser,
            template_variables=frozenset({"enable_thinking"}),
        )
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
            if w.sample:
                deltas.append(self._next(w.seq_id, seq))
        return deltas, []

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

    def release(self, seq_id: int) -> None:
        self.released.append(seq_id)
        self._seqs.pop(seq_id, None)

    def kv_cache_used(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


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
