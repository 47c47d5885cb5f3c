"""Speculative decoding's logic: prompt lookup, the policy, the scheduler's limits, the
models.toml table, and the engine with a fake backend that speculates."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import Speculative, Work
from backends.speculative import NgramIndex
from server.config import ConfigError, load_models_file
from server.engine.loop import Engine, EngineState
from server.engine.metrics import Metrics
from server.engine.requests import Failed, Finished, FinishReason, TextDelta
from server.engine.scheduler import Scheduler, SeqState
from server.engine.speculation import (
    MIN_RATE,
    RETRY_STEPS,
    Speculation,
    StepCosts,
    expected_gain,
)
from tests.fakes import FakeBackend, FakePlugin
from tests.unit.test_engine import chat, load_request, run

# -- prompt lookup ---------------------------------------------------------------------


def test_lookup_continues_the_latest_earlier_occurrence_of_the_longest_ngram() -> None:
    index = NgramIndex(2, 4)
    index.extend([1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 2, 3])
    # "2 3" last occurred before at 5..6, followed by 7 8 5 2 3; "5 2 3" never did.
    assert index.draft(3) == [7, 8, 5]
    index.extend([7])  # now "2 3 7" matches 5..7 (n = 3)
    assert index.draft(2) == [8, 5]


def test_lookup_prefers_the_longer_match_over_a_later_shorter_one() -> None:
    index = NgramIndex(2, 3)
    index.extend([4, 1, 2, 10, 11, 5, 1, 2, 20, 4, 1, 2])
    # "1 2" last occurred at 6..7 (then 20), but "4 1 2" at 0..2 (then 10): n = 3 wins.
    assert index.draft(2) == [10, 11]


def test_no_draft_without_a_recurring_ngram_and_none_asked() -> None:
    index = NgramIndex(2, 4)
    index.extend([1, 2, 3, 4, 5])
    assert index.draft(4) == []
    index.extend([1])
    assert index.draft(4) == []  # a single token is below n_min
    index.extend([2])
    assert index.draft(4) == [3, 4, 5, 1]
    assert index.draft(0) == []


def test_lookup_grows_token_by_token_as_a_whole_build_does() -> None:
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 1, 4, 1, 5]
    whole, grown = NgramIndex(), NgramIndex()
    whole.extend(tokens)
    for t in tokens:
        grown.extend([t])
    assert grown.draft(5) == whole.draft(5) == [9, 2, 6, 5, 3]


def test_bad_ngram_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        NgramIndex(3, 2)
    with pytest.raises(ValueError):
        NgramIndex(0, 2)


# -- the policy ------------------------------------------------------------------------


def test_expected_gain_is_a_geometric_sum() -> None:
    assert expected_gain(0.5, 3) == pytest.approx(0.5 + 0.25 + 0.125)
    assert expected_gain(1.0, 4) == 4
    assert expected_gain(0.0, 4) == 0


def test_step_costs_interpolate_and_extrapolate_optimistically() -> None:
    costs = StepCosts()
    assert costs.estimate(4) is None
    costs.record(1, 0.010)
    costs.record(9, 0.050)
    assert costs.estimate(5) == pytest.approx(0.030)
    assert 0.050 < costs.estimate(17) < 0.050 * 2  # type: ignore[operator]
    costs.record(9, 0.100)  # smoothed, not replaced
    assert 0.050 < costs.estimate(9) < 0.100  # type: ignore[operator]


def test_step_costs_are_kept_by_sequence_count() -> None:
    costs = StepCosts()
    costs.record(4, 0.040, sequences=1)
    costs.record(4, 0.100, sequences=4)
    assert costs.estimate(4, 1) == 0.040 and costs.estimate(4, 4) == 0.100
    assert costs.estimate(6, 4) > 0.100  # type: ignore[operator]
    assert costs.estimate(4, 2) is None  # never seen: measured first, no guess


def test_a_batch_drafts_once_its_own_plain_step_is_measured() -> None:
    spec = Speculation(max_draft=8)
    assert all(w.draft == 0 for w in spec.plan(decoding(0, 1, 2, 3), lambda s: 8, 512))
    spec.step_took(4, 0.100, sequences=4)
    assert any(w.draft for w in spec.plan(decoding(0, 1, 2, 3), lambda s: 8, 512))


def decoding(*seq_ids: int) -> list[Work]:
    return [Work(s, 1, True) for s in seq_ids]


def test_no_draft_before_the_plain_step_is_measured() -> None:
    spec = Speculation(max_draft=8)
    assert spec.plan(decoding(0), lambda s: 8, 512) == decoding(0)


def test_drafts_where_tokens_are_cheap_and_not_where_they_cost_their_weight() -> None:
    cheap = Speculation(max_draft=8)  # a GPU: a pass costs the same for 1 or 9 tokens
    for n in range(1, 10):
        cheap.step_took(n, 0.010)
    assert cheap.plan(decoding(0), lambda s: 8, 512)[0].draft > 0
    dear = Speculation(max_draft=8)  # each token costs as much as the first
    for n in range(1, 10):
        dear.step_took(n, 0.010 * n)
    assert dear.plan(decoding(0), lambda s: 8, 512)[0].draft == 0


def test_the_draft_length_follows_acceptance() -> None:
    spec = Speculation(max_draft=16)
    for n in range(1, 40):
        spec.step_took(n, 0.010)
    first = spec.plan(decoding(0), lambda s: 16, 512)[0].draft
    spec.record(0, first, first)  # all taken: it doubles
    assert spec.plan(decoding(0), lambda s: 16, 512)[0].draft == 2 * first
    spec.record(0, 2 * first, 1)  # one taken: one past it
    assert spec.plan(decoding(0), lambda s: 16, 512)[0].draft == 2


def test_a_sequence_that_never_gets_a_token_accepted_stops_then_retries() -> None:
    spec = Speculation(max_draft=8)
    for n in range(1, 20):
        spec.step_took(n, 0.010)
    drafts = []
    for _ in range(100):
        draft = spec.plan(decoding(0), lambda s: 8, 512)[0].draft
        drafts.append(draft)
        spec.record(0, draft, 0)
    assert spec._seqs[0].rate < MIN_RATE * 2
    # Once refused enough, it drafts only once every RETRY_STEPS steps.
    tail = drafts[-3 * RETRY_STEPS :]
    assert sum(1 for d in tail if d) == 3
    assert tail.count(0) == 3 * (RETRY_STEPS - 1)


def test_limits_hold_room_step_budget_and_max_batch() -> None:
    spec = Speculation(max_draft=8, max_batch=2)
    for n in range(1, 40):
        spec.step_took(n, 0.010, sequences=2)
        spec.step_took(n, 0.010, sequences=3)
    planned = spec.plan(decoding(0, 1), lambda s: 3 if s == 0 else 0, 512)
    assert [w.draft for w in planned] == [3, 0]  # room 3; none for seq 1
    assert sum(w.draft for w in spec.plan(decoding(0, 1), lambda s: 8, 6)) <= 4  # 2 + drafts <= 6
    assert all(w.draft == 0 for w in spec.plan(decoding(0, 1, 2), lambda s: 8, 512))
    prefill = [Work(5, 30, False)]  # a prompt chunk never drafts
    assert spec.plan(prefill, lambda s: 8, 512) == prefill


def test_scheduler_draft_room_stays_within_max_tokens_and_reservation() -> None:
    sched = Scheduler(max_running=2, kv_capacity=100, step_tokens=16, max_waiting=2)
    sched.add(SeqState(0, prompt_len=10, max_tokens=20))
    sched.admit()
    assert sched.draft_room(0) == 0  # still prefilling
    sched.advance([Work(0, 10, True)])
    assert sched.running[0].generated == 1
    assert sched.draft_room(0) == 18  # 19 more tokens at most, one of them sampled
    sched.advance([Work(0, 1, True, draft=8)], accepted={0: 8})
    assert sched.running[0].generated == 10
    assert sched.draft_room(0) == 9
    assert sched.draft_room(7) == 0  # not running


# -- models.toml -----------------------------------------------------------------------


def models_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    path = tmp_path / "models.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_speculative_defaults_and_a_draft_model_by_name(tmp_path: Path) -> None:
    path = models_file(
        tmp_path,
        """
        [models.big]
        path = "a.gguf"
        [models.big.speculative]
        drafters = ["ngram", "model"]
        draft_model = "small"
        max_draft = 8
        [models.small]
        path = "b.gguf"
        """,
    )
    models = load_models_file(path, tmp_path).models
    spec = models["big"].speculative
    assert spec is not None and spec.drafters == ("ngram", "model")
    assert spec.draft_model == tmp_path / "b.gguf" and spec.max_draft == 8
    assert models["small"].speculative == Speculative()  # the default: the backend's own


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('drafters = ["eagle"]', "drafters"),
        ('drafters = ["model"]', "draft_model"),
        ('draft_model = "small"', "draft_model"),
        ('drafters = ["model"]\ndraft_model = "nope"', "must name"),
        ('drafters = ["model"]\ndraft_model = "big"', "must name"),
        ("max_draft = 0", "max_draft"),
        ("ngram_min = 3\nngram_max = 2", "ngram_max"),
        ("lookahead = 3", "unknown"),
    ],
)
def test_bad_speculative_tables_are_refused(tmp_path: Path, table: str, message: str) -> None:
    path = models_file(
        tmp_path,
        f'[models.big]\npath = "a.gguf"\n[models.big.speculative]\n{table}\n'
        '[models.small]\npath = "b.gguf"\n',
    )
    with pytest.raises(ConfigError, match=message):
        load_models_file(path, tmp_path)


def test_an_embedding_model_takes_no_speculative_table(tmp_path: Path) -> None:
    path = models_file(
        tmp_path, '[models.e]\npath = "a.gguf"\ntask = "embed"\n[models.e.speculative]\n'
    )
    with pytest.raises(ConfigError, match="generate"):
        load_models_file(path, tmp_path)


# -- the engine ------------------------------------------------------------------------


@pytest.fixture
def spec_engine() -> Iterator[Engine]:
    load = load_request(speculative=Speculative(("ngram",), max_draft=4))
    eng = Engine("fake", FakePlugin(), load, metrics=Metrics(), max_waiting=4,
                 default_max_tokens=100)  # fmt: skip
    eng.start()
    assert eng.wait_loaded(5) and eng.state is EngineState.READY
    assert eng._speculation is not None
    for n in range(1, 80):  # a device where extra tokens are nearly free
        eng._speculation.step_took(n, 0.001)
    yield eng
    eng.stop()


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def finished(events: list[object]) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def test_speculation_gives_the_same_text_in_fewer_steps(spec_engine: Engine) -> None:
    backend = spec_engine.backend
    assert isinstance(backend, FakeBackend)
    text = "the quick brown fox jumps over the lazy dog, twice over"
    (events,) = run(spec_engine, chat(text))
    assert text_of(events) == text
    assert finished(events).usage.completion_tokens == len(text)
    drafted = [w.draft for step in backend.steps for w in step]
    assert max(drafted) == 4
    assert len(backend.steps) < len(text) // 2
    metrics = spec_engine._metrics.render()
    assert 'hearth_spec_accepted_tokens_total{drafter="ngram",model="fake"}' in metrics


def test_refused_draft_tokens_are_not_output(spec_engine: Engine) -> None:
    backend = spec_engine.backend
    assert isinstance(backend, FakeBackend)
    backend.draft_wrong_at = 1
    text = "abcdefghijklmnopqrstuvwxyz"
    (events,) = run(spec_engine, chat(text))
    assert text_of(events) == text


def test_max_tokens_and_stops_cut_a_speculative_step(spec_engine: Engine) -> None:
    text = "0123456789" * 3
    (capped,) = run(spec_engine, chat(text, max_tokens=7))
    assert text_of(capped) == "0123456"
    assert finished(capped).reason is FinishReason.LENGTH
    assert finished(capped).usage.completion_tokens == 7
    (stopped,) = run(spec_engine, chat(text, rid="s", stop=("45",)))
    assert text_of(stopped) == "0123"


def test_a_request_may_turn_speculation_off(spec_engine: Engine) -> None:
    backend = spec_engine.backend
    assert isinstance(backend, FakeBackend)
    (events,) = run(spec_engine, chat("no guessing here", speculative=False))
    assert text_of(events) == "no guessing here"
    assert all(w.draft == 0 for step in backend.steps for w in step)


def test_asking_for_speculation_from_a_model_without_a_drafter_is_refused() -> None:
    eng = Engine("fake", FakePlugin(), load_request(), metrics=Metrics(), max_waiting=2,
                 default_max_tokens=100)  # fmt: skip
    eng.start()
    try:
        assert eng.wait_loaded(5)
        (events,) = run(eng, chat("hi", speculative=True))
        assert isinstance(events[-1], Failed)
        assert events[-1].error.param == "speculative"
        (plain,) = run(eng, chat("hi", rid="b", speculative=False))
        assert text_of(plain) == "hi"
    finally:
        eng.stop()
