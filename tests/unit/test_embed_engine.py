"""An embedding or reranking model's engine with the fake backend: passes shared by
concurrent requests, limits per input, truncation, dimensions, aborts, failures, and
requests of the wrong kind."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest

from backends.base import EMBED, RERANK
from server.engine.embed_loop import EmbedEngine
from server.engine.inbox import RequestStream
from server.engine.loop import Engine, EngineState
from server.engine.metrics import Metrics
from server.engine.requests import Accepted, Admitted, Embedded, EmbeddingRequest, Event, Failed
from server.errors import ContextLengthExceeded, InternalError, InvalidRequest, WrongModelTask
from tests.fakes import EMBED_SIZE, FakeBackend, FakePlugin
from tests.unit.test_engine import chat, load_request


def start(task: str = EMBED, **kw: object) -> EmbedEngine:
    load = load_request(task=task, normalize=task == EMBED, max_sequences=8, **kw)
    eng = EmbedEngine("fake", FakePlugin(), load, metrics=Metrics(), max_waiting=4,
                      default_max_tokens=100)  # fmt: skip
    eng.start()
    assert eng.wait_loaded(5) and eng.state is EngineState.READY
    return eng


@pytest.fixture
def engine() -> Iterator[EmbedEngine]:
    eng = start()
    yield eng
    eng.stop()


def fake(engine: Engine) -> FakeBackend:
    assert isinstance(engine.backend, FakeBackend)
    return engine.backend


def embedding(*inputs: str | tuple[int, ...], rid: str = "e", **kw: object) -> EmbeddingRequest:
    return EmbeddingRequest(rid, "fake", tuple(inputs), time.monotonic(), **kw)  # type: ignore[arg-type]


async def collect(stream: RequestStream) -> list[Event]:
    events: list[Event] = []
    while not events or not isinstance(events[-1], Embedded | Failed):
        events.append(await asyncio.wait_for(stream.next(), 5))
    return events


def run(engine: Engine, *requests: EmbeddingRequest) -> list[list[Event]]:
    async def main() -> list[list[Event]]:
        loop = asyncio.get_running_loop()
        streams = [engine.submit(r, loop) for r in requests]
        return list(await asyncio.gather(*(collect(s) for s in streams)))

    return asyncio.run(main())


def vectors(events: list[Event]) -> list[list[float]]:
    last = events[-1]
    assert isinstance(last, Embedded), last
    return [v.tolist() for v in last.vectors]


def error(events: list[Event]) -> Exception:
    last = events[-1]
    assert isinstance(last, Failed), last
    return last.error


def test_each_input_gets_its_vector_in_order(engine: EmbedEngine) -> None:
    (events,) = run(engine, embedding("aaaa", "ab", (1, 9)))
    assert isinstance(events[0], Accepted) and events[0].prompt_tokens == 8
    assert any(isinstance(e, Admitted) for e in events)
    got = vectors(events)
    assert len(got) == 3 and all(len(v) == EMBED_SIZE for v in got)
    assert got[0][ord("a") % EMBED_SIZE] == pytest.approx(1.0)  # normalised
    assert got[2] == pytest.approx([0, 1, 0, 0, 0, 0, 0, 0], abs=1e-6)  # 1 and 9: mod 8 both 1
    assert fake(engine).passes == [[4, 2, 2]]
    assert isinstance(events[-1], Embedded) and events[-1].prompt_tokens == 8


def test_concurrent_requests_share_a_pass(engine: EmbedEngine) -> None:
    backend = fake(engine)
    backend.gate.clear()

    async def main() -> list[list[Event]]:
        loop = asyncio.get_running_loop()
        first = engine.submit(embedding("x" * 10, rid="a"), loop)
        await asyncio.sleep(0.1)  # its pass is running, held at the gate
        later = [engine.submit(embedding("y" * 5, "z" * 6, rid=r), loop) for r in "bc"]
        await asyncio.sleep(0.1)
        backend.gate.set()
        return list(await asyncio.gather(*(collect(s) for s in [first, *later])))

    results = asyncio.run(main())
    assert all(isinstance(events[-1], Embedded) for events in results)
    assert backend.passes == [[10], [5, 6, 5, 6]]  # b then c, in one pass


def test_a_pass_holds_at_most_the_batch(engine: EmbedEngine) -> None:
    # batch_tokens 64, max_sequences 8 (tests.unit.test_engine's load request)
    (events,) = run(engine, embedding(*(["t" * 30] * 5), *(["s"] * 10)))
    assert len(vectors(events)) == 15
    passes = fake(engine).passes
    assert all(sum(p) <= 64 and len(p) <= 8 for p in passes)
    assert sum(len(p) for p in passes) == 15


def test_an_input_over_the_limit_is_refused_or_cut(engine: EmbedEngine) -> None:
    limit = fake(engine).capabilities.context_length  # min(context, batch): 64
    (events,) = run(engine, embedding("ok", "x" * (limit + 1)))
    exc = error(events)
    assert isinstance(exc, ContextLengthExceeded) and exc.param == "input[1]"
    assert f"{limit + 1} tokens" in exc.message and str(limit) in exc.message
    (events,) = run(engine, embedding("x" * (limit + 1), truncate=True))
    assert isinstance(events[0], Accepted) and events[0].prompt_tokens == limit
    (events,) = run(engine, embedding("x" * 20, truncate=True, context_limit=8))
    assert fake(engine).passes[-1] == [8]
    (events,) = run(engine, embedding("x" * 20, context_limit=8))
    assert "context window is 8" in error(events).message  # type: ignore[attr-defined]


def test_dimensions_cut_and_renormalise(engine: EmbedEngine) -> None:
    (events,) = run(engine, embedding("abcd", dimensions=2))
    (vector,) = vectors(events)
    assert len(vector) == 2 and math.hypot(*vector) == pytest.approx(1.0)
    (events,) = run(engine, embedding("abcd", dimensions=EMBED_SIZE + 1))
    exc = error(events)
    assert isinstance(exc, InvalidRequest) and exc.param == "dimensions"


def test_token_inputs_are_checked_against_the_vocabulary(engine: EmbedEngine) -> None:
    (events,) = run(engine, embedding((1, 2), (5, 999)))
    exc = error(events)
    assert isinstance(exc, InvalidRequest) and exc.param == "input[1]"
    assert fake(engine).passes == []


def test_a_reranker_scores_each_document_against_the_query() -> None:
    eng = start(RERANK, pooling="rank")
    try:
        docs = ("red apples", "blue sky over the sea", "red sky")
        (events,) = run(eng, embedding(*docs, query="red sky at night", param="documents"))
        assert [v[0] for v in vectors(events)] == pytest.approx([0.5, 0.2, 1.0])
    finally:
        eng.stop()


def test_a_request_of_the_wrong_kind_fails_alone(engine: EmbedEngine) -> None:
    async def main() -> list[Event]:
        stream = engine.submit(chat("hi"), asyncio.get_running_loop())
        return [await asyncio.wait_for(stream.next(), 5)]

    (failed,) = asyncio.run(main())
    assert isinstance(failed, Failed) and isinstance(failed.error, WrongModelTask)
    (events,) = run(engine, embedding("still here"))
    assert len(vectors(events)) == 1


def test_a_generating_engine_refuses_an_embedding_request() -> None:
    eng = Engine("fake", FakePlugin(), load_request(), metrics=Metrics(), max_waiting=2,
                 default_max_tokens=10)  # fmt: skip
    eng.start()
    try:
        assert eng.wait_loaded(5)
        (events,) = run(eng, embedding("x"))
        assert isinstance(error(events), WrongModelTask)
    finally:
        eng.stop()


def test_an_aborted_request_leaves_its_inputs_unembedded(engine: EmbedEngine) -> None:
    backend = fake(engine)
    backend.gate.clear()

    async def main() -> list[Event]:
        loop = asyncio.get_running_loop()
        busy = engine.submit(embedding("x" * 60, rid="busy"), loop)
        await asyncio.sleep(0.1)
        # queued and aborted while the engine is in a pass: dropped before the next
        engine.submit(embedding(*(["y" * 30] * 4), rid="gone"), loop)
        engine.abort("gone")
        await asyncio.sleep(0.1)
        backend.gate.set()
        return await collect(busy)

    assert len(vectors(asyncio.run(main()))) == 1
    run(engine, embedding("after"))
    assert backend.passes == [[60], [5]]


def test_a_pass_that_raises_fails_its_requests_and_the_engine_serves_on(
    engine: EmbedEngine,
) -> None:
    fake(engine).raise_steps = 1
    (events,) = run(engine, embedding("doomed"))
    assert isinstance(error(events), InternalError)
    (events,) = run(engine, embedding("fine"))
    assert len(vectors(events)) == 1 and engine.state is EngineState.READY


def test_inputs_and_tokens_are_counted(engine: EmbedEngine) -> None:
    run(engine, embedding("abc", "de"))
    text = engine._metrics.render()  # type: ignore[attr-defined]
    assert 'hearth_embedding_inputs_total{model="fake"} 2' in text
    assert 'hearth_embedding_tokens_total{model="fake"} 5' in text
    assert 'hearth_requests_total{finish_reason="embedded",model="fake"} 1' in text
