"""A backend that cannot start a sequence fails that request only; the engine serves on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from backends.base import SamplingParams
from server.engine.loop import Engine, EngineState
from server.engine.requests import Failed
from server.errors import InternalError
from tests.unit.test_engine import chat, engine, fake, run, text_of

__all__ = ["engine"]  # the fixture, imported for these tests


def test_add_raising_fails_that_request_and_the_engine_serves_on(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = fake(engine)
    original = backend.add

    def add(seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        if sampling.presence_penalty:
            raise TypeError("a sampler the backend cannot build")
        return original(seq_id, prompt, sampling)

    monkeypatch.setattr(backend, "add", add)
    (events,) = run(engine, chat("doomed", sampling=SamplingParams(presence_penalty=1.0)))
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, InternalError)
    (events,) = run(engine, chat("fine"))
    assert text_of(events) == "fine"
    assert engine.state is EngineState.READY


def test_out_of_memory_at_start_is_a_retryable_503_for_that_request(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.base import OutOfMemory
    from server.errors import ModelUnavailable

    backend = fake(engine)
    original = backend.add

    def add(seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        if sampling.seed == 99:
            raise OutOfMemory("the model's memory limit is reached; retry later")
        return original(seq_id, prompt, sampling)

    monkeypatch.setattr(backend, "add", add)
    (events,) = run(engine, chat("big", sampling=SamplingParams(seed=99)))
    error = events[-1].error if isinstance(events[-1], Failed) else None
    assert isinstance(error, ModelUnavailable) and error.status == 503
    assert error.headers() == {"Retry-After": "5"} and "memory limit" in str(error)
    (events,) = run(engine, chat("fine"))
    assert text_of(events) == "fine"
