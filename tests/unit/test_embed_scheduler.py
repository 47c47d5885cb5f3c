"""The embedding scheduler: which inputs of which requests share each forward pass."""

from __future__ import annotations

import pytest

from server.engine.embed_scheduler import MAX_SKIPS, EmbedJob, EmbedScheduler, Piece
from server.engine.scheduler import QueueFullError


def scheduler(batch_tokens: int = 100, max_inputs: int = 8, max_waiting: int = 4) -> EmbedScheduler:
    return EmbedScheduler(batch_tokens=batch_tokens, max_inputs=max_inputs, max_waiting=max_waiting)


def run(s: EmbedScheduler) -> list[list[tuple[int, int]]]:
    """Every pass until nothing is left, as (job, input) pairs; completed jobs leave."""
    passes = []
    while s.has_work():
        pieces = s.plan()
        assert pieces, "work left but nothing planned"
        passes.append([(p.key, p.index) for p in pieces])
        for job in s.advance(pieces):
            s.finish(job.key)
    return passes


def test_one_request_fills_passes_up_to_the_token_budget() -> None:
    s = scheduler(batch_tokens=100)
    s.add(EmbedJob(1, (40, 40, 40, 10)))
    assert run(s) == [[(1, 0), (1, 1)], [(1, 2), (1, 3)]]


def test_a_pass_holds_at_most_max_inputs() -> None:
    s = scheduler(batch_tokens=1000, max_inputs=3)
    s.add(EmbedJob(1, (5,) * 7))
    assert [len(p) for p in run(s)] == [3, 3, 1]


def test_concurrent_requests_share_a_pass_fewest_inputs_left_first() -> None:
    s = scheduler(batch_tokens=60)
    s.add(EmbedJob(1, (10,) * 5))
    s.add(EmbedJob(2, (10, 10)))
    # the smaller request first, whole, then the larger one fills the pass
    assert s.plan() == [Piece(2, 0, 10), Piece(2, 1, 10), Piece(1, 0, 10), Piece(1, 1, 10),
                        Piece(1, 2, 10), Piece(1, 3, 10)]  # fmt: skip


def test_equal_requests_finish_one_after_another() -> None:
    """Not all together: each client can send its next request while the others run."""
    s = scheduler(batch_tokens=40)
    for key in (1, 2, 3):
        s.add(EmbedJob(key, (10,) * 4))
    finished = []
    while s.has_work():
        pieces = s.plan()
        finished.append([job.key for job in s.advance(pieces)])
        for key in finished[-1]:
            s.finish(key)
    assert finished == [[1], [2], [3]]


def test_a_small_request_behind_a_large_one_waits_one_pass() -> None:
    s = scheduler(batch_tokens=100, max_inputs=8)
    s.add(EmbedJob(1, (10,) * 2048))
    first = s.plan()
    assert {p.key for p in first} == {1}
    s.advance(first)
    s.add(EmbedJob(2, (10,)))
    second = s.plan()
    assert Piece(2, 0, 10) in second and len(second) == 8


def test_a_job_whose_next_input_does_not_fit_sits_out_and_keeps_its_order() -> None:
    s = scheduler(batch_tokens=100)
    s.add(EmbedJob(1, (30, 5)))
    s.add(EmbedJob(2, (50, 60, 5)))
    pieces = s.plan()
    # job 2's second input (60) does not fit after 30 + 5 + 50: job 2 waits, its third
    # input does not jump ahead of it
    assert pieces == [Piece(1, 0, 30), Piece(1, 1, 5), Piece(2, 0, 50)]
    s.advance(pieces)
    assert s.plan() == [Piece(2, 1, 60), Piece(2, 2, 5)]


def test_a_large_job_left_out_again_and_again_goes_first() -> None:
    s = scheduler(batch_tokens=10, max_waiting=100)
    s.add(EmbedJob(0, (10,) * 3))
    key = 1
    for _ in range(MAX_SKIPS):  # a new one-input request before every pass
        s.add(EmbedJob(key, (10,)))
        assert [p.key for p in s.plan()] == [key]
        key += 1
    s.add(EmbedJob(key, (10,)))
    assert [p.key for p in s.plan()] == [0]


def test_advance_reports_the_jobs_a_pass_completed() -> None:
    s = scheduler()
    s.add(EmbedJob(1, (10, 10)))
    s.add(EmbedJob(2, (10,)))
    pieces = s.plan()
    assert sorted(j.key for j in s.advance(pieces)) == [1, 2]
    assert not s.has_work()


def test_finish_drops_a_job_and_its_inputs_left() -> None:
    s = scheduler(batch_tokens=20)
    s.add(EmbedJob(1, (10,) * 6))
    s.add(EmbedJob(2, (10,) * 2))
    s.advance(s.plan())  # job 2's two inputs
    s.advance(s.plan())  # job 1's first two
    assert s.finish(1) is not None and s.finish(1) is None
    assert run(s) == []


def test_an_input_over_the_batch_is_refused() -> None:
    s = scheduler(batch_tokens=100)
    with pytest.raises(ValueError):
        s.add(EmbedJob(1, (10, 101)))
    with pytest.raises(ValueError):
        s.add(EmbedJob(2, ()))


def test_the_queue_bounds_jobs_not_yet_started() -> None:
    s = scheduler(batch_tokens=10, max_waiting=2)
    s.add(EmbedJob(1, (10, 10)))
    s.add(EmbedJob(2, (10,)))
    with pytest.raises(QueueFullError):
        s.add(EmbedJob(3, (10,)))
    s.advance(s.plan())  # job 1 started: one waiting now
    s.add(EmbedJob(3, (10,)))
    assert s.waiting() == 2


def test_passes_fill_to_pass_tokens_and_a_longer_input_goes_alone() -> None:
    s = EmbedScheduler(batch_tokens=512, max_inputs=64, max_waiting=4, pass_tokens=256)
    s.add(EmbedJob(1, (100, 100, 100, 400, 30)))
    # 100 + 100 fill toward 256; the third would pass it. 400 is over pass_tokens but
    # within the batch: it goes in a pass of its own, then 30 follows.
    assert run(s) == [[(1, 0), (1, 1)], [(1, 2)], [(1, 3)], [(1, 4)]]
    s.add(EmbedJob(2, (400,)))
    s.add(EmbedJob(3, (10, 10)))
    # a pass that starts with a long input takes nothing more past pass_tokens
    assert s.plan() == [Piece(2, 0, 400)]
