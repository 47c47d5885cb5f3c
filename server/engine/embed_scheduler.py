"""Which embedding inputs go into the next forward pass.

An embedding or rerank request is a job: its inputs, each of a known number of tokens.
A pass embeds at most ``max_inputs`` inputs, each input whole (a pooled vector needs all
of its tokens in one pass), up to ``pass_tokens`` tokens, or one input alone of up to
``batch_tokens`` (the most the model's pass holds). ``pass_tokens`` may be smaller than
``batch_tokens``: the attention of an encoder's pass spans every token in it, so many
short inputs embed faster in passes of a few hundred tokens.

A pass is filled from the jobs with the fewest inputs left first (arrival order among
equals), each job's inputs in order, then the next job's, until nothing more fits:
concurrent requests share passes; a query of a few inputs behind an index of two
thousand waits for one pass, not for all of it; and requests finish one after another
rather than all together, so a client can send its next one while the others run (the
model never waits for a round trip). A job whose next input does not fit the room left
sits the rest of that pass out. One left out of ``MAX_SKIPS`` passes in a row goes
first, so a large job is never starved by a stream of small ones.

Like :mod:`server.engine.scheduler` it knows no backend and does no I/O: the engine
runs the plan and records it, so this is tested in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.engine.scheduler import QueueFullError

MAX_SKIPS = 8


@dataclass(slots=True)
class EmbedJob:
    key: int
    lengths: tuple[int, ...]  # tokens of each input
    planned: int = 0  # inputs handed to passes so far (the first ``planned``)
    done: int = 0  # inputs embedded
    skipped: int = 0  # passes in a row that took none of its inputs

    @property
    def left(self) -> int:
        return len(self.lengths) - self.planned

    @property
    def started(self) -> bool:
        return self.planned > 0


@dataclass(frozen=True, slots=True)
class Piece:
    """One input of a pass: the ``index``-th input of job ``key``."""

    key: int
    index: int
    n_tokens: int


class EmbedScheduler:
    def __init__(
        self, *, batch_tokens: int, max_inputs: int, max_waiting: int, pass_tokens: int = 0
    ) -> None:
        """``pass_tokens``: the tokens a pass fills to (``batch_tokens`` when 0)."""
        self.batch_tokens = batch_tokens
        self.pass_tokens = min(pass_tokens or batch_tokens, batch_tokens)
        self.max_inputs = max_inputs
        self.max_waiting = max_waiting
        self.jobs: dict[int, EmbedJob] = {}  # in arrival order

    def add(self, job: EmbedJob) -> None:
        """Queue a job. Raises ``ValueError`` for an input that could never fit a pass,
        :class:`QueueFullError` past ``max_waiting`` jobs not yet started."""
        if not job.lengths or not all(0 < n <= self.batch_tokens for n in job.lengths):
            raise ValueError("every input needs 1 to batch_tokens tokens")
        if self.waiting() >= self.max_waiting:
            raise QueueFullError
        self.jobs[job.key] = job

    def plan(self) -> list[Piece]:
        """The next pass (empty when no job has inputs left), marked as planned."""
        pieces: list[Piece] = []
        tokens = 0
        waiting = [job for job in self.jobs.values() if job.left]
        for job in sorted(waiting, key=lambda j: (j.skipped < MAX_SKIPS, j.left)):  # stable
            taken = 0
            while job.left and len(pieces) < self.max_inputs:
                n = job.lengths[job.planned]
                if pieces and tokens + n > self.pass_tokens:
                    break  # the rest of this job waits for a later pass
                pieces.append(Piece(job.key, job.planned, n))
                tokens, job.planned, taken = tokens + n, job.planned + 1, taken + 1
            job.skipped = 0 if taken else job.skipped + 1
        return pieces

    def advance(self, pieces: list[Piece]) -> list[EmbedJob]:
        """Record a pass that ran; returns the jobs it completed (still held until
        :meth:`finish`)."""
        complete = []
        for piece in pieces:
            job = self.jobs.get(piece.key)
            if job is None:
                continue  # aborted while its pass ran
            job.done += 1
            if job.done == len(job.lengths):
                complete.append(job)
        return complete

    def finish(self, key: int) -> EmbedJob | None:
        """Remove a job (complete, failed or aborted); ``None`` if it was not here."""
        return self.jobs.pop(key, None)

    def waiting(self) -> int:
        return sum(not job.started for job in self.jobs.values())

    def has_work(self) -> bool:
        return any(job.left for job in self.jobs.values())
