"""Which embedding inputs go into the next forward pass.

An embedding or rerank request is a job: its inputs, each of a known number of tokens.
A pass embeds up to ``batch_tokens`` tokens in at most ``max_inputs`` inputs, each input
whole (a pooled vector needs all of its tokens in one pass). The pass is filled from
every job with inputs left, one input from each in arrival order, round after round,
until the next input of every job would not fit: concurrent requests share passes, and a
request of a few inputs behind one of two thousand waits for a pass, not for all of them.
A job's inputs go in order; one whose next input does not fit the room left sits the
rest of that pass out.

Like :mod:`server.engine.scheduler` it knows no backend and does no I/O: the engine
runs the plan and records it, so this is tested in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.engine.scheduler import QueueFullError


@dataclass(slots=True)
class EmbedJob:
    key: int
    lengths: tuple[int, ...]  # tokens of each input
    planned: int = 0  # inputs handed to passes so far (the first ``planned``)
    done: int = 0  # inputs embedded

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
    def __init__(self, *, batch_tokens: int, max_inputs: int, max_waiting: int) -> None:
        self.batch_tokens = batch_tokens
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
        turn = [job for job in self.jobs.values() if job.planned < len(job.lengths)]
        while turn and len(pieces) < self.max_inputs:
            again = []
            for job in turn:
                if len(pieces) == self.max_inputs:
                    break
                n = job.lengths[job.planned]
                if tokens + n > self.batch_tokens:
                    continue  # this job sits the rest of the pass out
                pieces.append(Piece(job.key, job.planned, n))
                tokens += n
                job.planned += 1
                if job.planned < len(job.lengths):
                    again.append(job)
            turn = again
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
        return any(job.planned < len(job.lengths) for job in self.jobs.values())
