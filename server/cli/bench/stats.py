"""Pure statistics for `hearth bench`: per-request results in, level summaries out.

Nothing here does I/O or reads a clock, so every number the benchmark reports
can be unit-tested from plain lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The per-user speed below which a chat stops feeling interactive (tokens/s).
INTERACTIVE_TPS = 5.0
MAX_TTFT_S = 10.0  # a user who waits longer for the first token is not being served
#: Share of registered users logged in at a busy moment, and share of those
#: waiting on a reply at the same instant: one active stream per 100 users.
LOGGED_IN_SHARE = 0.1
ACTIVE_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One streamed request, timed from the moment it was sent (seconds)."""

    completion_tokens: int
    total_s: float
    ttft_s: float | None = None
    #: Time of the last content chunk, on the same clock as ``ttft_s``.
    last_token_s: float | None = None
    prompt_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def per_user_tps(self) -> float | None:
        return per_user_tps(self.completion_tokens, self.ttft_s, self.last_token_s)


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """One concurrency level: ``requests`` sent with exactly ``concurrency`` in flight."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    completion_tokens: int
    aggregate_tps: float
    per_user_tps_p50: float | None
    per_user_tps_p10: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    prompt_tokens_mean: float | None
    #: Up to three distinct error messages, so a failed level says why.
    error_samples: tuple[str, ...] = ()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default; None if empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def per_user_tps(tokens: int, first_s: float | None, last_s: float | None) -> float | None:
    """Decode speed one user sees: tokens after the first over the time they took to arrive.

    None when it cannot be measured: fewer than two tokens, or all of them in one chunk.
    """
    if tokens < 2 or first_s is None or last_s is None or last_s <= first_s:
        return None
    return (tokens - 1) / (last_s - first_s)


def summarize_level(
    concurrency: int, results: Sequence[RequestResult], wall_s: float
) -> LevelSummary:
    """Aggregate one level; failed requests count as errors and add no tokens."""
    ok = [r for r in results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    speeds = [s for r in ok if (s := r.per_user_tps) is not None]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    return LevelSummary(
        concurrency=concurrency,
        requests=len(results),
        errors=len(results) - len(ok),
        wall_s=wall_s,
        completion_tokens=tokens,
        aggregate_tps=tokens / wall_s if wall_s > 0 else 0.0,
        per_user_tps_p50=percentile(speeds, 50),
        per_user_tps_p10=percentile(speeds, 10),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        prompt_tokens_mean=sum(prompts) / len(prompts) if prompts else None,
        error_samples=tuple(dict.fromkeys(r.error for r in results if r.error is not None))[:3],
    )


def interactive_concurrency(
    levels: Sequence[LevelSummary],
    threshold: float = INTERACTIVE_TPS,
    max_ttft: float = MAX_TTFT_S,
) -> int | None:
    """Largest measured concurrency whose 10th-percentile user still gets ``threshold`` t/s
    and whose 95th-percentile user sees the first token within ``max_ttft`` seconds (a
    server that queues users is fast for those it serves, but not serving the rest).

    A level with any failed request does not qualify.
    """
    passing = [
        lv.concurrency
        for lv in levels
        if lv.errors == 0
        and lv.per_user_tps_p10 is not None
        and lv.per_user_tps_p10 >= threshold
        and lv.ttft_p95_s is not None
        and lv.ttft_p95_s <= max_ttft
    ]
    return max(passing, default=None)


def registered_users(concurrency: int) -> int:
    """Registered users that produce ``concurrency`` simultaneous streams at a busy moment."""
    return round(concurrency / (LOGGED_IN_SHARE * ACTIVE_SHARE))


def founding_answer(levels: Sequence[LevelSummary], threshold: float = INTERACTIVE_TPS) -> str:
    """The one-line answer to "how many people can this box serve?"."""
    best = interactive_concurrency(levels, threshold)
    if best is None:
        return (
            f"No measured concurrency keeps the 10th-percentile user at >= {threshold:g} t/s "
            f"with a first token within {MAX_TTFT_S:g} s (without errors)."
        )
    return (
        f"Up to {best} concurrent streams keep the 10th-percentile user at >= {threshold:g} t/s "
        f"and the first token within {MAX_TTFT_S:g} s (p95): "
        f"serves about {registered_users(best)} registered users "
        f"({LOGGED_IN_SHARE:.0%} logged in, {ACTIVE_SHARE:.0%} of those active)."
    )


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_table(levels: Sequence[LevelSummary]) -> str:
    """A fixed-width text table, one row per level."""
    head = (
        f"{'conc':>5} {'reqs':>5} {'err':>4} {'agg t/s':>9} {'user p50':>9} {'user p10':>9} "
        f"{'ttft p50 ms':>12} {'ttft p95 ms':>12} {'wall s':>7}"
    )
    rows = [head, "-" * len(head)]
    for lv in levels:
        rows.append(
            f"{lv.concurrency:>5} {lv.requests:>5} {lv.errors:>4} {lv.aggregate_tps:>9.1f} "
            f"{_fmt(lv.per_user_tps_p50):>9} {_fmt(lv.per_user_tps_p10):>9} "
            f"{_fmt(lv.ttft_p50_s, 1000, 0):>12} {_fmt(lv.ttft_p95_s, 1000, 0):>12} "
            f"{lv.wall_s:>7.1f}"
        )
    return "\n".join(rows)
