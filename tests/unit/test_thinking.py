"""A request's thinking in the engine: template variables, a prompt that opens the
reasoning block, and the reasoning budget's forced close tag (scheduler, engine loop and
the fake backend)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends.base import Capabilities, Work
from server.engine.loop import Engine, EngineState
from server.engine.metrics import Metrics
from server.engine.requests import Accepted, Failed, Finished, TextDelta, Thinking
from server.engine.scheduler import SeqState
from server.engine.thinking import ReasoningBudget, template_variables
from server.errors import InvalidRequest
from tests.fakes import FakePlugin
from tests.unit.test_engine import chat, fake, load_request, run
from tests.unit.test_scheduler import make, run_step

CLOSE = list(b"</think>\n\n")


def caps(reasoning: str | None, reads: frozenset[str] = frozenset()) -> Capabilities:
    return Capabilities(256, 1, 257, True, reasoning_format=reasoning, template_variables=reads)


# -- template variables ----------------------------------------------------------------


def test_thinking_demanded_of_a_model_without_reasoning_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        template_variables((), Thinking("on"), caps(None))
    assert info.value.param == "thinking"
    assert template_variables((), Thinking("auto", "high"), caps(None)) == {}


def test_thinking_reaches_only_the_variables_the_template_reads() -> None:
    reads = frozenset({"enable_thinking", "reasoning_effort"})
    assert template_variables((), Thinking("off"), caps("think", reads)) == {
        "enable_thinking": False
    }
    assert template_variables((), Thinking("on", "low"), caps("harmony", reads)) == {
        "enable_thinking": True,
        "reasoning_effort": "low",
    }
    assert template_variables((), Thinking("off", "low"), caps("think")) == {}


def test_a_variable_the_request_set_itself_wins() -> None:
    kwargs = (("enable_thinking", "true"), ("custom", '{"a": [1]}'))
    got = template_variables(kwargs, Thinking("off"), caps("think", frozenset({"enable_thinking"})))
    assert got == {"enable_thinking": True, "custom": {"a": [1]}}


# -- following the reasoning block -----------------------------------------------------


def test_the_budget_is_due_once_spent_inside_the_block() -> None:
    budget = ReasoningBudget("think", 4, inside=False)
    assert [budget.feed(t) for t in ["<th", "ink", ">", "a", "b", "c"]] == [
        False, False, False, True, False, False,
    ]  # fmt: skip


def test_the_budget_is_not_due_outside_the_block() -> None:
    budget = ReasoningBudget("think", 2, inside=True)
    assert [budget.feed(t) for t in ["a</th", "ink>", "b", "c"]] == [False] * 4
    harmony = ReasoningBudget("harmony", 1, inside=False)
    assert not harmony.feed("<|channel|>final<|message|>")
    assert harmony.feed("<|channel|>analysis<|message|>")


# -- the scheduler ---------------------------------------------------------------------


def test_forced_tokens_are_fed_with_the_last_sampled_one() -> None:
    s = make(max_running=2, step=8)
    s.add(SeqState(0, prompt_len=3, max_tokens=20))
    run_step(s)  # prefill, first sample
    assert s.force(0, 4)
    work = run_step(s)
    assert work == [Work(0, 5, True)]
    assert s.running[0].generated == 6 and s.running[0].forced == 0
    assert run_step(s) == [Work(0, 1, True)]


def test_forced_tokens_that_do_not_fit_wait_a_step() -> None:
    s = make(max_running=2, step=5)  # room for 3 forced tokens beside a full batch
    for i in range(2):
        s.add(SeqState(i, prompt_len=1, max_tokens=20))
    run_step(s)
    assert not s.force(0, 4)  # never fits a step
    assert s.force(0, 3) and s.force(1, 3)
    assert run_step(s) == [Work(0, 4, True)]
    assert run_step(s) == [Work(0, 1, True), Work(1, 4, True)]


def test_a_prefilling_sequence_is_never_forced() -> None:
    s = make(step=4)
    s.add(SeqState(0, prompt_len=10, max_tokens=5))
    run_step(s)
    assert not s.force(0, 1)


def test_forced_tokens_take_kv() -> None:
    s = make(max_running=1, kv=40, step=16)
    s.add(SeqState(0, prompt_len=10, max_tokens=12))  # reserves 22
    run_step(s)
    assert s.force(0, 12)
    assert s.out_of_room() == [0]  # 10 + 1 + 12 past the 22 reserved


# -- the engine ------------------------------------------------------------------------


def started(reasoning_parser: str | None) -> Iterator[Engine]:
    eng = Engine("fake", FakePlugin(), load_request(reasoning_parser=reasoning_parser),
                 metrics=Metrics(), max_waiting=4, default_max_tokens=100)  # fmt: skip
    eng.start()
    assert eng.wait_loaded(5) and eng.state is EngineState.READY
    yield eng
    eng.stop()


@pytest.fixture
def thinker() -> Iterator[Engine]:
    yield from started("think")


@pytest.fixture
def plain() -> Iterator[Engine]:
    yield from started(None)


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_a_budget_ends_thinking_with_forced_close_tokens(thinker: Engine) -> None:
    reply = "<think>" + "x" * 20 + "</think>\n\nok"
    [events] = run(thinker, chat(reply, thinking=Thinking(budget_tokens=10)))
    assert text_of(events) == "<think>xxx</think>\n\nok"
    assert fake(thinker).forced == [(0, CLOSE)]
    assert Work(0, 1 + len(CLOSE), True) in [w for step in fake(thinker).steps for w in step]
    end = events[-1]
    assert isinstance(end, Finished) and end.usage.completion_tokens == 10 + len(CLOSE) + 2


def test_a_budget_never_forces_once_thinking_ended(thinker: Engine) -> None:
    reply = "<think>ab</think>\n\n" + "y" * 30  # the block ends at its 17th token
    [events] = run(thinker, chat(reply, thinking=Thinking(budget_tokens=17)))
    assert text_of(events) == reply and fake(thinker).forced == []


def test_a_prompt_that_opens_the_block_is_accepted_as_reasoning(thinker: Engine) -> None:
    [events] = run(thinker, chat("Solve it.<think>\n"))
    accepted = events[0]
    assert isinstance(accepted, Accepted) and accepted.reasoning_open


def test_thinking_off_closes_a_block_the_prompt_opened(thinker: Engine) -> None:
    [events] = run(thinker, chat("Q<think>\n", thinking=Thinking("off")))
    accepted = events[0]
    assert isinstance(accepted, Accepted) and not accepted.reasoning_open
    assert accepted.prompt_tokens == 1 + len("Q<think>\n") + len(CLOSE)
    assert fake(thinker).template_kwargs[-1] == {"enable_thinking": False}


def test_a_model_without_reasoning_refuses_thinking_on_and_allows_auto(plain: Engine) -> None:
    on, auto = run(plain, chat("hi", "a", thinking=Thinking("on")), chat("hi", "b"))
    assert isinstance(on[-1], Failed) and on[-1].error.param == "thinking"
    assert isinstance(auto[0], Accepted) and not auto[0].reasoning_open
    assert text_of(auto) == "hi"


def test_template_kwargs_reach_the_backend(thinker: Engine) -> None:
    run(thinker, chat("hi", template_kwargs=(("custom", '"v"'),)))
    assert fake(thinker).template_kwargs[-1] == {"custom": "v"}
