"""The scheduler alone: admission, chunked prefill, aborts, queue bound, fairness."""

from __future__ import annotations

import pytest

from backends.base import Work
from server.engine.requests import INTERACTIVE
from server.engine.scheduler import MAX_PASSES, QueueFullError, Scheduler, SeqState, SeqStatus


def make(max_running: int = 4, kv: int = 1000, step: int = 64, waiting: int = 8) -> Scheduler:
    return Scheduler(max_running=max_running, kv_capacity=kv, step_tokens=step, max_waiting=waiting)


def run_step(s: Scheduler) -> list[Work]:
    s.admit()
    work = s.plan()
    s.advance(work)
    return work


def test_admits_in_order_up_to_the_sequence_limit() -> None:
    s = make(max_running=2)
    for i in range(3):
        s.add(SeqState(i, prompt_len=10, max_tokens=10))
    admitted = s.admit()
    assert [q.seq_id for q in admitted] == [0, 1]
    assert [q.seq_id for q in s.waiting] == [2]
    assert all(q.status is SeqStatus.RUNNING for q in admitted)


def test_admission_is_by_kv_budget_not_slot_count() -> None:
    s = make(max_running=8, kv=100)
    s.add(SeqState(0, prompt_len=30, max_tokens=30))  # reserves 60
    s.add(SeqState(1, prompt_len=30, max_tokens=20))  # 50: does not fit beside it
    assert [q.seq_id for q in s.admit()] == [0]
    assert s.kv_reserved == 60
    s.finish(0)
    assert s.kv_reserved == 0
    assert [q.seq_id for q in s.admit()] == [1]


def test_a_request_that_does_not_fit_lets_smaller_ones_past() -> None:
    s = make(max_running=8, kv=100)
    s.add(SeqState(0, prompt_len=30, max_tokens=30))  # reserves 60
    s.add(SeqState(1, prompt_len=30, max_tokens=20))  # 50: does not fit beside it
    s.add(SeqState(2, prompt_len=1, max_tokens=1))  # fits: not held behind 1
    assert [q.seq_id for q in s.admit()] == [0, 2]
    assert [q.seq_id for q in s.waiting] == [1] and s.waiting[0].passed == 1
    s.finish(0)
    assert [q.seq_id for q in s.admit()] == [1]


def test_an_interactive_request_is_admitted_ahead_of_a_waiting_big_one() -> None:
    s = make(max_running=8, kv=100)
    s.add(SeqState(0, prompt_len=30, max_tokens=30))  # an agent's request, running
    assert [q.seq_id for q in s.admit()] == [0]
    s.add(SeqState(1, prompt_len=40, max_tokens=20))  # another: waits for 0's KV
    s.add(SeqState(2, prompt_len=10, max_tokens=10, priority=INTERACTIVE))  # an editor's
    assert [q.seq_id for q in s.admit()] == [2]
    assert [q.seq_id for q in s.waiting] == [1]


def test_interactive_requests_take_a_free_slot_first() -> None:
    s = make(max_running=1, kv=1000)
    s.add(SeqState(0, prompt_len=10, max_tokens=10))
    s.add(SeqState(1, prompt_len=10, max_tokens=10, priority=INTERACTIVE))
    s.add(SeqState(2, prompt_len=10, max_tokens=10, priority=INTERACTIVE))
    assert [q.seq_id for q in s.admit()] == [1]
    s.finish(1)
    assert [q.seq_id for q in s.admit()] == [2]
    s.finish(2)
    assert [q.seq_id for q in s.admit()] == [0]


def test_a_passed_over_request_is_admitted_after_a_bounded_number_of_passes() -> None:
    # A steady stream of interactive requests, each fitting beside the running ones,
    # would hold a big request back forever; after MAX_PASSES it goes first, and
    # nothing goes past it while it waits for KV.
    s = make(max_running=8, kv=100, waiting=64)
    s.add(SeqState(0, prompt_len=30, max_tokens=30))  # 60, running
    s.admit()
    s.add(SeqState(1, prompt_len=40, max_tokens=20))  # 60: waits for 0's KV
    small = iter(range(2, 1000))
    finished: list[int] = []
    for _ in range(MAX_PASSES + 10):
        s.add(SeqState(next(small), prompt_len=5, max_tokens=5, priority=INTERACTIVE))
        admitted = [q.seq_id for q in s.admit()]
        if 1 in admitted:
            break
        if not admitted:  # 1 is due and blocks: the running ones end one by one
            running = sorted(s.running)
            finished.append(running[0])
            s.finish(running[0])
        elif len(s.running) > 2:  # the editor's requests end quickly
            s.finish(admitted[0])
    assert 1 in s.running, "the big request starved"
    assert s.running[1].passed == MAX_PASSES
    assert 0 in finished  # it got its turn by waiting for 0, not by luck
    assert s.kv_reserved <= s.kv_capacity


def test_a_due_request_that_fits_goes_before_interactive_ones() -> None:
    s = make(max_running=1, kv=1000, waiting=64)
    s.add(SeqState(0, prompt_len=10, max_tokens=10))
    for i in range(1, MAX_PASSES + 1):
        s.add(SeqState(i, prompt_len=10, max_tokens=10, priority=INTERACTIVE))
        assert [q.seq_id for q in s.admit()] == [i]
        s.finish(i)
    s.add(SeqState(99, prompt_len=10, max_tokens=10, priority=INTERACTIVE))
    assert [q.seq_id for q in s.admit()] == [0]  # passed over MAX_PASSES times: its turn


def test_a_sequence_larger_than_the_budget_is_refused_at_once() -> None:
    s = make(kv=100)
    with pytest.raises(ValueError):
        s.add(SeqState(0, prompt_len=90, max_tokens=20))


def test_queue_bound_raises_queue_full() -> None:
    s = make(max_running=1, waiting=1)
    s.add(SeqState(0, 5, 5))  # a free slot takes it at once: not counted
    s.add(SeqState(1, 5, 5))
    with pytest.raises(QueueFullError):
        s.add(SeqState(2, 5, 5))
    s.admit()
    with pytest.raises(QueueFullError):
        s.add(SeqState(2, 5, 5))
    s.finish(0)
    s.admit()  # 1 leaves the queue for the batch: room again
    s.add(SeqState(2, 5, 5))


def test_long_prompt_is_chunked_and_decoders_run_every_step() -> None:
    s = make(step=16)
    s.add(SeqState(0, prompt_len=4, max_tokens=50))
    first = run_step(s)
    assert first == [Work(0, 4, True)]  # whole prompt, then sample
    s.add(SeqState(1, prompt_len=40, max_tokens=5))
    chunks = []
    for _ in range(3):
        work = run_step(s)
        assert Work(0, 1, True) in work  # the running stream never waits
        chunks += [w for w in work if w.seq_id == 1]
    assert [w.n_tokens for w in chunks] == [15, 15, 10]
    assert [w.sample for w in chunks] == [False, False, True]
    assert run_step(s) == [Work(0, 1, True), Work(1, 1, True)]


def test_step_budget_is_shared_oldest_prefill_first() -> None:
    s = make(step=10)
    s.add(SeqState(0, prompt_len=8, max_tokens=5))
    s.add(SeqState(1, prompt_len=8, max_tokens=5))
    assert run_step(s) == [Work(0, 8, True), Work(1, 2, False)]
    assert run_step(s) == [Work(0, 1, True), Work(1, 6, True)]


def test_priority_prefills_first() -> None:
    s = make(step=10)
    s.add(SeqState(0, prompt_len=100, max_tokens=5))
    s.add(SeqState(1, prompt_len=6, max_tokens=5, priority=1))
    assert run_step(s) == [Work(1, 6, True), Work(0, 4, False)]


def test_cached_prefix_is_not_prefilled_again() -> None:
    s = make(step=64)
    s.add(SeqState(0, prompt_len=50, max_tokens=5))
    (seq,) = s.admit()
    seq.fed = 45  # the backend had 45 tokens cached
    assert s.plan() == [Work(0, 5, True)]


def test_abort_of_waiting_and_running() -> None:
    s = make(max_running=1)
    s.add(SeqState(0, 5, 5))
    s.add(SeqState(1, 5, 5))
    s.admit()
    waiting = s.finish(1)
    assert waiting is not None and waiting.status is SeqStatus.FINISHED
    assert not s.waiting
    running = s.finish(0)
    assert running is not None and not s.running and s.kv_reserved == 0
    assert s.finish(0) is None
    assert not s.has_work()


def test_all_running_sequences_share_each_step_fairly() -> None:
    s = make(max_running=16, kv=10_000, step=512, waiting=16)
    for i in range(16):
        s.add(SeqState(i, prompt_len=20, max_tokens=10))
    first = run_step(s)
    assert sorted(w.seq_id for w in first) == list(range(16))
    second = run_step(s)
    assert sorted(w.seq_id for w in second) == list(range(16))
    assert all(w.n_tokens == 1 for w in second)


def test_step_tokens_must_cover_one_token_per_sequence() -> None:
    with pytest.raises(ValueError):
        Scheduler(max_running=8, kv_capacity=100, step_tokens=4, max_waiting=1)


def test_priority_request_arriving_behind_a_long_prefill_gets_the_next_chunk() -> None:
    s = make(step=16, kv=10_000)
    s.add(SeqState(0, prompt_len=8000, max_tokens=5))
    assert run_step(s) == [Work(0, 16, False)]  # the long prompt is prefilling
    s.add(SeqState(1, prompt_len=10, max_tokens=5, priority=1))
    assert run_step(s) == [Work(1, 10, True), Work(0, 6, False)]
    # Decoding now, the interactive request shares every step with the long prefill.
    assert run_step(s) == [Work(1, 1, True), Work(0, 15, False)]


def elastic(seq_id: int, prompt_len: int = 10, max_tokens: int = 4096) -> SeqState:
    """A request without max_tokens: its limit is the model's default."""
    return SeqState(seq_id, prompt_len, max_tokens, elastic=True)


def steps_until_cut(s: Scheduler, limit: int = 10_000) -> tuple[int, list[int]]:
    """Run steps (admission, growth, plan, feed) until some sequences are cut."""
    for n in range(limit):
        s.admit()
        cut = s.out_of_room()
        if cut:
            return n, cut
        s.advance(s.plan())
    raise AssertionError("nothing was cut")


def test_requests_without_max_tokens_reserve_a_fair_share_so_every_slot_runs() -> None:
    # 16 slots, 32,768 tokens, default_max_tokens 4096 (hearth's default model): asked
    # for in full, 7 would run; elastic, all 16 do, each holding 2,048.
    s = make(max_running=16, kv=32_768, step=512, waiting=16)
    for i in range(16):
        s.add(elastic(i, prompt_len=30))
    assert len(s.admit()) == 16
    assert s.kv_reserved == 32_768
    full = make(max_running=16, kv=32_768, step=512, waiting=16)
    for i in range(16):
        full.add(SeqState(i, 30, 4096))
    assert len(full.admit()) == 7


def test_an_elastic_request_alone_grows_to_its_whole_default() -> None:
    s = make(max_running=4, kv=1000, step=64)
    s.add(elastic(0, prompt_len=10, max_tokens=600))
    (seq,) = s.admit()
    assert seq.reserved == 250  # its share: 1000 / 4
    for _ in range(600):
        assert s.out_of_room() == []
        s.advance(s.plan())
    assert seq.generated == 600 and seq.reserved == 610 == s.kv_reserved


def test_an_elastic_request_that_cannot_grow_is_cut_and_its_kv_freed() -> None:
    s = make(max_running=2, kv=200, step=64)
    s.add(elastic(0, prompt_len=10))
    s.add(elastic(1, prompt_len=10))
    assert len(s.admit()) == 2  # 100 each: the whole budget
    _, cut = steps_until_cut(s)
    assert cut == [0, 1]
    # Each had fed prompt + generated - 1 tokens; the next feed would pass 100.
    assert [s.running[i].generated for i in cut] == [91, 91]
    for i in cut:
        s.finish(i)
    assert s.kv_reserved == 0


def test_a_waiting_request_is_admitted_before_a_running_one_grows() -> None:
    s = make(max_running=2, kv=200, step=64)
    s.add(elastic(0, prompt_len=10))
    s.admit()
    for _ in range(95):  # 0 outgrows its share (100) into the free half
        assert s.out_of_room() == []
        s.advance(s.plan())
    assert s.running[0].reserved == 132
    s.add(SeqState(1, prompt_len=10, max_tokens=58))  # asks for 68 of the 68 left
    assert [q.seq_id for q in s.admit()] == [1]
    _, cut = steps_until_cut(s)
    assert cut == [0]  # 0 cannot grow past 132; 1 keeps its whole reservation


def test_a_request_with_max_tokens_keeps_its_whole_reservation() -> None:
    s = make(max_running=4, kv=1000)
    s.add(SeqState(0, prompt_len=10, max_tokens=600))
    (seq,) = s.admit()
    assert seq.reserved == 610
    for _ in range(599):
        assert s.out_of_room() == []
        s.advance(s.plan())
