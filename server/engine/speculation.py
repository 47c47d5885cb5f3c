"""When speculating pays: which decoding sequences draft this step, and how many tokens.

Verifying ``k`` draft tokens adds ``k`` tokens to the step's forward pass; it pays when
the tokens they are expected to add outweigh what they add to the step's time. Both
sides are measured as the engine runs, so the same rule holds on a CPU, where a pass
costs more with every token, and on a GPU, where a decode pass is bound by reading the
weights and tokens are nearly free until the batch is large:

- Each sequence keeps an acceptance rate (the share of its draft tokens accepted,
  smoothed over its recent steps) and a draft length: doubled after a step that took
  every draft token, cut to one past what was taken after one that did not. Its
  expected gain from ``k`` tokens at rate ``a`` is ``a + a^2 + ... + a^k`` tokens.
- :class:`StepCosts` keeps the time of a step by the number of sequences it advanced
  and of tokens it fed, smoothed, measured on every step. An unmeasured size is
  estimated from the nearest measured ones of as many sequences, optimistically, so
  that a size is tried and then known.
- Each step the sequences are taken best rate first: one drafts where the step's
  tokens per second with its draft beat those without. So speculation turns itself off
  as the batch grows (each sequence's tokens then cost as much as a draft token and
  earn more), and back on as it shrinks. ``max_batch`` is a hard cap on top.

A sequence never drafts past its ``max_tokens`` or its KV reservation (the scheduler's
:meth:`~server.engine.scheduler.Scheduler.draft_room`), nor while the engine forces its
reasoning budget's close.

Pure policy: no backend, no clock of its own; the engine passes step times in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from backends.base import Work

RATE_PRIOR = 0.6  # a new sequence's acceptance rate, until its first verified draft
RATE_WEIGHT = 0.3  # the weight of a step's acceptance in the smoothed rate
COST_WEIGHT = 0.2  # the weight of a step's time in the smoothed cost of its size
FIRST_DRAFT = 4  # a new sequence's draft length
MIN_RATE = 0.05  # below this a sequence stops drafting (and retries now and then)
RETRY_STEPS = 16  # steps before a sequence that stopped drafting tries once more
UNMEASURED_SLOPE = 0.02  # an unmeasured size: this share of the known step per token


@dataclass(slots=True)
class _SeqSpec:
    length: int
    rate: float = RATE_PRIOR
    idle: int = 0  # steps since it last drafted, while its rate is below MIN_RATE


class StepCosts:
    """Smoothed seconds per step by the number of sequences it advanced and the tokens it
    fed: four sequences' tokens cost more than four tokens of one (each attends to its
    own context), so the two are kept apart."""

    def __init__(self) -> None:
        self._seconds: dict[int, dict[int, float]] = {}

    def record(self, tokens: int, seconds: float, sequences: int = 1) -> None:
        row = self._seconds.setdefault(sequences, {})
        old = row.get(tokens)
        row[tokens] = seconds if old is None else old + COST_WEIGHT * (seconds - old)

    def estimate(self, tokens: int, sequences: int = 1) -> float | None:
        """The time of a step of ``tokens`` over ``sequences``: measured, interpolated
        between the nearest measured sizes, or extrapolated optimistically above them;
        None before any step of that many sequences."""
        known = self._seconds.get(sequences, {})
        if tokens in known:
            return known[tokens]
        below = max((t for t in known if t < tokens), default=None)
        above = min((t for t in known if t > tokens), default=None)
        if below is not None and above is not None:
            share = (tokens - below) / (above - below)
            return known[below] + share * (known[above] - known[below])
        if below is not None:
            return known[below] * (1 + UNMEASURED_SLOPE * (tokens - below))
        if above is not None:
            return known[above]
        return None

    def table(self) -> dict[int, dict[int, float]]:
        return {n: dict(sorted(row.items())) for n, row in sorted(self._seconds.items())}


def expected_gain(rate: float, length: int) -> float:
    """Tokens ``length`` draft tokens are expected to add, each taken with ``rate`` given
    the ones before it were."""
    if rate >= 1.0:
        return float(length)
    return rate * (1 - rate**length) / (1 - rate)


class Speculation:
    """The policy of one model's engine (see the module docstring)."""

    def __init__(self, *, max_draft: int, max_batch: int = 0) -> None:
        self.max_draft = max_draft
        self.max_batch = max_batch
        self.costs = StepCosts()
        self._seqs: dict[int, _SeqSpec] = {}

    def plan(
        self,
        work: Sequence[Work],
        eligible: Callable[[int], int],
        step_tokens: int,
    ) -> list[Work]:
        """``work`` with ``draft`` set where it pays. ``eligible(seq_id)`` is the most a
        sequence may draft (0: it may not: not decoding, opted out, at its limits);
        ``step_tokens`` the most tokens one step may feed."""
        decoding = sum(1 for w in work if w.sample)
        if self.max_batch and decoding > self.max_batch:
            return list(work)
        tokens, sequences = sum(w.n_tokens for w in work), len(work)
        base = self.costs.estimate(tokens, sequences)
        if base is None:
            return list(work)  # the first step measures the cost of plain decoding
        emitted = float(decoding)
        candidates = []
        for i, w in enumerate(work):
            room = min(eligible(w.seq_id), self.max_draft) if w.sample else 0
            if room <= 0:
                continue
            state = self._seqs.setdefault(w.seq_id, _SeqSpec(min(FIRST_DRAFT, self.max_draft)))
            if state.rate < MIN_RATE:
                state.idle += 1
                if state.idle < RETRY_STEPS:
                    continue
                state.idle, state.rate = 0, MIN_RATE  # try once more
            length = min(state.length, room)
            candidates.append((expected_gain(state.rate, length) / length, i, length, state))
        planned = list(work)
        for _, i, longest, state in sorted(candidates, key=lambda c: -c[0]):
            best = None
            for length in range(1, min(longest, step_tokens - tokens) + 1):
                cost = self.costs.estimate(tokens + length, sequences)
                gain = expected_gain(state.rate, length)
                # Tokens per second of the step with this draft, against without it.
                if cost is not None and (emitted + gain) * base > emitted * cost:
                    speed = (emitted + gain) / cost
                    if best is None or speed > best[0]:
                        best = (speed, length, cost, gain)
            if best is None:
                continue
            _, length, cost, gain = best
            planned[i] = replace(planned[i], draft=length)
            tokens, base, emitted = tokens + length, cost, emitted + gain
        return planned

    def record(self, seq_id: int, drafted: int, accepted: int) -> None:
        """A sequence's draft was verified: ``accepted`` of its ``drafted`` tokens taken."""
        state = self._seqs.get(seq_id)
        if state is None or drafted <= 0:
            return
        state.rate += RATE_WEIGHT * (accepted / drafted - state.rate)
        if accepted == drafted:
            state.length = min(self.max_draft, max(state.length, drafted) * 2)
        else:
            state.length = max(1, accepted + 1)

    def step_took(self, tokens: int, seconds: float, sequences: int = 1) -> None:
        if tokens > 0 and math.isfinite(seconds):
            self.costs.record(tokens, seconds, sequences)

    def forget(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)
