"""The engine thread with a fake backend: batching, stops, limits, aborts, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import ChatMessage, LoadRequest, SamplingParams
from server.engine.inbox import RequestStream
from server.engine.loop import Engine, EngineState
from server.engine.metrics import Metrics
from server.engine.requests import (
    Accepted,
    Event,
    Failed,
    Finished,
    FinishReason,
    GenerationRequest,
    TextDelta,
)
from server.errors import ContextLengthExceeded, InternalError, QueueFull
from tests.fakes import FakeBackend, FakePlugin


def load_request(**kw: object) -> LoadRequest:
    base: dict[str, object] = dict(
        name="fake", path=Path("m.fake"), context_length=256, max_sequences=4, threads=1,
        gpu_layers=None, tensor_split=None, chat_template=None, batch_tokens=64,
    )  # fmt: skip
    base.update(kw)
    return LoadRequest(**base)  # type: ignore[arg-type]


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(
        "fake",
        FakePlugin(),
        load_request(),
        metrics=Metrics(),
        max_waiting=2,
        default_max_tokens=100,
    )
    eng.start()
    assert eng.wait_loaded(5) and eng.state is EngineState.READY
    yield eng
    eng.stop()


def fake(engine: Engine) -> FakeBackend:
    assert isinstance(engine.backend, FakeBackend)
    return engine.backend


def chat(text: str, rid: str = "r", **kw: object) -> GenerationRequest:
    fields: dict[str, object] = dict(
        request_id=rid, model="fake", sampling=SamplingParams(), max_tokens=None, stop=(),
        arrival=time.monotonic(), messages=(ChatMessage("user", text),),
    )  # fmt: skip
    fields.update(kw)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


async def collect(stream: RequestStream) -> list[Event]:
    events: list[Event] = []
    while not events or not isinstance(events[-1], Finished | Failed):
        events.append(await asyncio.wait_for(stream.next(), 5))
    return events


def run(engine: Engine, *requests: GenerationRequest) -> list[list[Event]]:
    async def main() -> list[list[Event]]:
        loop = asyncio.get_running_loop()
        streams = [engine.submit(r, loop) for r in requests]
        return list(await asyncio.gather(*(collect(s) for s in streams)))

    return asyncio.run(main())


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_answer_usage_and_stop_finish(engine: Engine) -> None:
    (events,) = run(engine, chat("héllo 🎉"))
    assert isinstance(events[0], Accepted)
    assert text_of(events) == "héllo 🎉"
    last = events[-1]
    assert isinstance(last, Finished) and last.reason is FinishReason.STOP
    assert last.usage.completion_tokens == len("héllo 🎉".encode())
    assert last.usage.prompt_tokens == events[0].prompt_tokens


def test_split_characters_arrive_whole(engine: Engine) -> None:
    (events,) = run(engine, chat("你好🎉"))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "你好🎉"
    assert all("\ufffd" not in d for d in deltas)


def test_max_tokens_ends_with_length(engine: Engine) -> None:
    (events,) = run(engine, chat("abcdefgh", max_tokens=3))
    last = events[-1]
    assert text_of(events) == "abc"
    assert isinstance(last, Finished) and last.reason is FinishReason.LENGTH
    assert last.usage.completion_tokens == 3


def test_stop_string_spanning_tokens_never_sent(engine: Engine) -> None:
    (events,) = run(engine, chat("one two STOP three", stop=("STOP",)))
    assert text_of(events) == "one two "
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.STOP


def test_concurrent_requests_share_steps(engine: Engine) -> None:
    results = run(
        engine, *(chat(f"answer number {i}", rid=f"r{i}", max_tokens=20) for i in range(4))
    )
    assert [text_of(e) for e in results] == [f"answer number {i}" for i in range(4)]
    widths = [len({w.seq_id for w in step}) for step in fake(engine).steps]
    assert max(widths) == 4  # one forward pass advanced all four


def test_context_length_exceeded_names_the_counts(engine: Engine) -> None:
    (events,) = run(engine, chat("x" * 20, max_tokens=250))
    assert isinstance(events[0], Failed)
    err = events[0].error
    assert isinstance(err, ContextLengthExceeded)
    assert "256" in err.message and "250" in err.message


def test_queue_full_past_the_bound(engine: Engine) -> None:
    fake(engine).gate.clear()

    async def main() -> list[Event]:
        loop = asyncio.get_running_loop()
        streams = [engine.submit(chat("abc", rid=f"q{i}"), loop) for i in range(7)]
        firsts = [await asyncio.wait_for(s.next(), 5) for s in streams]
        fake(engine).gate.set()
        for s, first in zip(streams, firsts, strict=True):
            if isinstance(first, Accepted):
                await collect(s)
        return firsts

    firsts = asyncio.run(main())
    accepted = [e for e in firsts if isinstance(e, Accepted)]
    refused = [e for e in firsts if isinstance(e, Failed)]
    assert len(accepted) == 6  # 4 running + 2 waiting
    assert len(refused) == 1 and isinstance(refused[0].error, QueueFull)
    assert refused[0].error.headers()["Retry-After"]


def test_abort_frees_the_sequence_and_a_queued_one_never_starts(engine: Engine) -> None:
    backend = fake(engine)
    backend.gate.clear()
    at_abort: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        streams = [
            engine.submit(chat("a" * 50, rid=f"a{i}", max_tokens=40), loop) for i in range(5)
        ]
        for s in streams:
            assert isinstance(await s.next(), Accepted)
        at_abort.append(len(backend.steps))
        engine.abort("a0")  # running
        engine.abort("a4")  # still waiting: never admitted
        backend.gate.set()
        for s in streams[1:4]:
            await collect(s)

    asyncio.run(main())
    assert 0 in backend.released
    assert all(w.seq_id != 4 for step in backend.steps for w in step)
    # The step in flight when the abort came may still hold it; none after that.
    after = backend.steps[at_abort[0] + 1 :]
    assert after and all(w.seq_id != 0 for step in after for w in step)


def test_step_failure_fails_those_requests_and_the_engine_serves_on(engine: Engine) -> None:
    fake(engine).fail_next_step = True
    (events,) = run(engine, chat("doomed"))
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, InternalError)
    (events,) = run(engine, chat("fine"))
    assert text_of(events) == "fine"


def test_a_step_that_raises_fails_that_batch_and_the_engine_serves_on(engine: Engine) -> None:
    fake(engine).raise_steps = 1
    (events,) = run(engine, chat("doomed"))
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, InternalError)
    (events,) = run(engine, chat("fine"))
    assert text_of(events) == "fine"
    assert engine.state is EngineState.READY


def test_a_backend_that_keeps_raising_kills_the_engine(engine: Engine) -> None:
    fake(engine).raise_steps = 3
    for i in range(2):
        (events,) = run(engine, chat("doomed", rid=f"d{i}"))
        assert isinstance(events[-1], Failed)
    (events,) = run(engine, chat("doomed"))
    assert isinstance(events[-1], Failed)
    deadline = time.monotonic() + 5
    # The state turns FAILED first; the backend is closed as the thread ends.
    while not fake(engine).closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.state is EngineState.FAILED
    assert fake(engine).closed


def test_a_model_that_fails_to_load_reports_why() -> None:
    eng = Engine(
        "bad", FakePlugin(), load_request(path=Path("missing.fake")),
        metrics=Metrics(), max_waiting=1, default_max_tokens=10,
    )  # fmt: skip
    eng.start()
    assert eng.wait_loaded(5)
    assert eng.state is EngineState.FAILED
    assert eng.error is not None and "missing.fake" in eng.error
