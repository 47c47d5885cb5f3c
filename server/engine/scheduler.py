"""The continuous-batching scheduler: which sequences run, and what each step feeds.

It knows no backend and does no I/O. Each step, every running sequence that is decoding
feeds its one new token, and the rest of the step's token budget goes to prompt chunks
of sequences still in prefill, oldest first; a long prompt therefore never holds the
running streams for more than one chunk. Past ``max_waiting`` queued sequences a new
one is refused (sequences that a free slot will take at once do not count).

Admission: while a slot is free, waiting sequences are tried in this order, each taken if
its KV reservation fits: first those *due* (passed over ``MAX_PASSES`` times), then
interactive ones (an editor's completion, which a person waits on), then the rest; arrival
order within each. A sequence that does not fit is skipped, so one large request does not
hold the small ones behind it (no head-of-line blocking), and each sequence admitted ahead
of one that arrived earlier counts as passing it over. Once due, a sequence that does not
fit stops admission: nothing more goes past it, and it runs as soon as the running
sequences free its KV (each ends by its ``max_tokens``). So interactive requests go first,
and no request waits for more than ``MAX_PASSES`` others plus the end of those running.

KV is reserved per sequence at admission. A request that asked for ``max_tokens``
reserves its prompt plus all of them, so it never runs out mid-answer. One that did not
(``elastic``: its limit is the model's ``default_max_tokens``) reserves its fair share of
the budget (``kv_capacity / max_running``, at least ``GROW_TOKENS`` past its prompt) and
grows ``GROW_TOKENS`` at a time while KV is free; when it cannot grow, it ends with
``length``. So a full slot count of such requests runs at once, as llama-server's
per-slot context does, and one alone still gets its whole default.

Forced tokens: the engine may queue tokens a decoding sequence feeds before its next
sample (a reasoning budget's close tag, :meth:`Scheduler.force`). They go in the step
with the token sampled last, before any prompt chunk, and count as generated: they take
KV like sampled ones. A sequence whose forced tokens do not fit this step's token budget
waits a step.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from backends.base import Work

GROW_TOKENS = 32
MAX_PASSES = 8  # admissions ahead of a waiting sequence before it goes first


class QueueFullError(Exception):
    pass


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True)
class SeqState:
    seq_id: int
    prompt_len: int
    max_tokens: int
    priority: int = 0  # higher is admitted and prefilled first
    elastic: bool = False  # max_tokens is the model's default, not the request's
    status: SeqStatus = SeqStatus.WAITING
    fed: int = 0  # prompt tokens in the KV cache (reused or prefilled)
    generated: int = 0  # tokens sampled or forced
    forced: int = 0  # tokens to feed with the last sampled one, before the next sample
    reserved: int = 0  # KV tokens held while running
    passed: int = 0  # sequences admitted ahead of this one while it waited

    @property
    def prefilling(self) -> bool:
        return self.fed < self.prompt_len


class Scheduler:
    def __init__(
        self, *, max_running: int, kv_capacity: int, step_tokens: int, max_waiting: int
    ) -> None:
        if step_tokens < max_running:
            raise ValueError("step_tokens must be at least max_running")
        self.max_running = max_running
        self.kv_capacity = kv_capacity
        self.step_tokens = step_tokens
        self.max_waiting = max_waiting
        self.waiting: deque[SeqState] = deque()
        self.running: dict[int, SeqState] = {}
        self.kv_reserved = 0

    def add(self, seq: SeqState) -> None:
        """Queue a sequence. Raises :class:`QueueFullError` past the waiting bound, and
        ``ValueError`` for one that could never fit the KV budget."""
        if self._first_reservation(seq) > self.kv_capacity:
            raise ValueError("sequence needs more KV than the whole budget")
        free_now = max(0, self.max_running - len(self.running))
        if len(self.waiting) >= self.max_waiting + free_now:
            raise QueueFullError
        self.waiting.append(seq)

    def admit(self) -> list[SeqState]:
        """Move waiting sequences to running while they fit, in the order the module
        docstring describes."""
        arrival = {seq.seq_id: i for i, seq in enumerate(self.waiting)}
        admitted = []
        for seq in sorted(self.waiting, key=self._rank):  # stable: arrival order within
            if len(self.running) >= self.max_running:
                break
            reservation = self._first_reservation(seq)
            if self.kv_reserved + reservation > self.kv_capacity:
                if seq.passed >= MAX_PASSES:
                    break
                continue
            self._start(seq, reservation)
            admitted.append(seq)
        for seq in self.waiting:
            seq.passed += sum(arrival[a.seq_id] > arrival[seq.seq_id] for a in admitted)
        return admitted

    @staticmethod
    def _rank(seq: SeqState) -> tuple[bool, int]:
        return seq.passed < MAX_PASSES, -seq.priority

    def _start(self, seq: SeqState, reservation: int) -> None:
        self.waiting.remove(seq)
        seq.status = SeqStatus.RUNNING
        seq.reserved = reservation
        self.running[seq.seq_id] = seq
        self.kv_reserved += reservation

    def _first_reservation(self, seq: SeqState) -> int:
        if not seq.elastic:
            return seq.prompt_len + seq.max_tokens
        share = self.kv_capacity // self.max_running
        return seq.prompt_len + min(seq.max_tokens, max(share - seq.prompt_len, GROW_TOKENS))

    def out_of_room(self) -> list[int]:
        """Running sequences whose next step would pass their reservation. An elastic one
        grows by up to ``GROW_TOKENS`` where free KV allows; the ids returned could not
        (the engine ends them with ``length``)."""
        cut = []
        for seq in self.running.values():
            # This step feeds the last sampled token (and any forced ones after it).
            needed = seq.prompt_len + seq.generated + seq.forced
            if seq.prefilling or needed <= seq.reserved:
                continue
            grow = min(max(GROW_TOKENS, needed - seq.reserved),
                       seq.prompt_len + seq.max_tokens - seq.reserved)  # fmt: skip
            if grow > 0 and self.kv_reserved + grow <= self.kv_capacity:
                seq.reserved += grow
                self.kv_reserved += grow
            else:
                cut.append(seq.seq_id)
        return cut

    def force(self, seq_id: int, n_tokens: int) -> bool:
        """Have a decoding sequence feed ``n_tokens`` queued tokens (the engine put them
        in the backend) with its last sampled token, before its next sample. False, and
        nothing changes, where they could never fit a step beside a full batch."""
        seq = self.running.get(seq_id)
        room = self.step_tokens - self.max_running
        if seq is None or seq.prefilling or seq.forced + n_tokens > room:
            return False
        seq.forced += n_tokens
        return True

    def plan(self) -> list[Work]:
        """This step's work: one token per decoding sequence (with its forced tokens
        where they fit), then prompt chunks."""
        decoding = [s for s in self.running.values() if not s.prefilling]
        budget = self.step_tokens - len(decoding)
        work = []
        for seq in sorted(decoding, key=lambda s: s.forced > 0):  # stable: plain ones first
            if seq.forced <= budget:
                work.append(Work(seq.seq_id, 1 + seq.forced, True))
                budget -= seq.forced
        prefilling = [s for s in self.running.values() if s.prefilling]
        prefilling.sort(key=lambda s: -s.priority)  # stable: arrival order within a priority
        for seq in prefilling:
            if budget <= 0:
                break
            n = min(budget, seq.prompt_len - seq.fed)
            work.append(Work(seq.seq_id, n, seq.fed + n == seq.prompt_len))
            budget -= n
        return work

    def draft_room(self, seq_id: int) -> int:
        """The most draft tokens a decoding sequence may verify this step: they take KV
        within its reservation until verified, and what is accepted counts as generated,
        so one more sample than the draft stays within its ``max_tokens``."""
        seq = self.running.get(seq_id)
        if seq is None or seq.prefilling or seq.forced:
            return 0
        kv = seq.reserved - (seq.prompt_len + seq.generated)
        return max(0, min(kv, seq.max_tokens - seq.generated - 1))

    def advance(self, work: list[Work], accepted: Mapping[int, int] | None = None) -> None:
        """Record that ``work`` was fed (prefill progress) and sampled; ``accepted``: the
        draft tokens each speculating sequence had accepted, generated as well."""
        for seq_id, n in (accepted or {}).items():
            if seq_id in self.running:
                self.running[seq_id].generated += n
        for w in work:
            seq = self.running.get(w.seq_id)
            if seq is None:
                continue
            if seq.prefilling:
                seq.fed += w.n_tokens
            else:
                seq.generated += w.n_tokens - 1  # the forced tokens fed this step
                seq.forced = 0
            if w.sample:
                seq.generated += 1

    def finish(self, seq_id: int) -> SeqState | None:
        """Remove a sequence, waiting or running (finished, failed or aborted).

        Returns its state, or ``None`` if it was not here."""
        seq = self.running.pop(seq_id, None)
        if seq is not None:
            self.kv_reserved -= seq.reserved
        else:
            seq = next((s for s in self.waiting if s.seq_id == seq_id), None)
            if seq is None:
                return None
            self.waiting.remove(seq)
        seq.status = SeqStatus.FINISHED
        return seq

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)
