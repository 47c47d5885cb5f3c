"""Fill in the middle: /v1/completions with a suffix, and llama-server's /infill."""

from __future__ import annotations

import asyncio
import json
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from server.engine.hub import ModelHub
from server.engine.inbox import RequestStream
from server.engine.requests import GenerationRequest
from tests.api.test_api import assert_error
from tests.fakes import FakeBackend

INFILL = "/infill"


def fake(hub: ModelHub, name: str = "alpha") -> FakeBackend:
    backend = hub.engines[name].backend
    assert isinstance(backend, FakeBackend)
    return backend


def test_completion_with_suffix_is_fim(client: TestClient, hub: ModelHub) -> None:
    body = {"model": "alpha", "prompt": "def f(", "suffix": "):\n"}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "):\n"  # the fake echoes the suffix
    assert fake(hub).fim_calls == [("def f(", "):\n", ())]


def test_empty_suffix_is_a_plain_completion(client: TestClient, hub: ModelHub) -> None:
    r = client.post("/v1/completions", json={"model": "alpha", "prompt": "abc", "suffix": ""})
    assert r.json()["choices"][0]["text"] == "abc"
    assert fake(hub).fim_calls == []


def test_fim_on_a_model_without_fim_tokens_is_400(client: TestClient) -> None:
    body = {"model": "beta", "prompt": "a", "suffix": "b"}
    error = assert_error(client.post("/v1/completions", json=body), 400, param="model")
    assert error["code"] == "fim_not_supported" and "fill-in-the-middle" in error["message"]
    body = {"model": "beta", "input_prefix": "a", "input_suffix": "b"}
    assert_error(client.post(INFILL, json=body), 400, code="fim_not_supported")


def test_infill_shape(client: TestClient, hub: ModelHub) -> None:
    body = {
        "input_prefix": "x = ",
        "input_suffix": "\ny = 2\n",
        "input_extra": [{"filename": "util.py", "text": "import os\n"}],
        "prompt": "1",
        "n_predict": 64,
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
    }
    r = client.post(INFILL, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["content"] == "\ny = 2\n1"  # the suffix, then the text after the middle
    assert data["stop"] is True and data["stop_type"] == "eos"
    assert data["model"] == "alpha"  # no model: the default
    assert data["tokens_predicted"] == len("\ny = 2\n1")
    assert data["tokens_evaluated"] > 0 and data["tokens_cached"] == 0
    assert set(data["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms"}
    assert fake(hub).fim_calls == [("x = ", "\ny = 2\n", (("util.py", "import os\n"),))]


def test_infill_n_predict_limits(client: TestClient) -> None:
    body = {"input_prefix": "a", "input_suffix": "bcdef", "n_predict": 2}
    data = client.post(INFILL, json=body).json()
    assert data["content"] == "bc" and data["stop_type"] == "limit"
    assert data["tokens_predicted"] == 2


def test_infill_stream(client: TestClient) -> None:
    body = {"model": "alpha", "input_prefix": "a", "input_suffix": "héllo", "stream": True}
    r = client.post(INFILL, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = [ln for ln in r.text.split("\n") if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    events: list[dict[str, Any]] = [json.loads(ln[6:]) for ln in lines]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == "héllo"
    assert events[-1]["tokens_predicted"] == len("héllo".encode())


def test_infill_refuses_what_it_does_not_know(client: TestClient) -> None:
    base = {"input_prefix": "a", "input_suffix": "b"}
    assert_error(client.post(INFILL, json={**base, "grammar": "x"}), 400, param="grammar")
    bad_extra: list[Any] = [[1], [{"filename": 1, "text": ""}], {"a": 1}, [{"path": "x"}]]
    for extra in bad_extra:
        r = client.post(INFILL, json={**base, "input_extra": extra})
        assert_error(r, 400, param="input_extra")
    assert_error(client.post(INFILL, json={**base, "input_prefix": 3}), 400, param="input_prefix")
    assert_error(client.post(INFILL, json={**base, "n_predict": 0}), 400, param="max_tokens")
    assert_error(client.post(INFILL, json={**base, "model": "nope"}), 404)


def test_an_interactive_completion_is_admitted_ahead_of_a_waiting_big_one(
    client: TestClient, hub: ModelHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's request runs, a second one waits for its KV; an editor's small
    completion arriving last runs beside the first instead of queueing behind the second."""
    engine, backend = hub.engines["alpha"], fake(hub)
    submitted: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    real_submit = engine.submit

    def submit(request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> RequestStream:
        stream = real_submit(request, loop)
        submitted.put(request.prompt)
        return stream

    monkeypatch.setattr(engine, "submit", submit)
    bodies: list[dict[str, Any]] = [
        {"model": "alpha", "prompt": "a" * 100, "max_tokens": 300},  # 400 of the KV's 512
        {"model": "alpha", "prompt": "b" * 20, "max_tokens": 200},  # 220: waits for the first
        {"model": "alpha", "prompt": "c" * 10, "max_tokens": 10, "interactive": True},
    ]
    backend.gate.clear()  # hold every step until the three are queued, in this order
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = []
        for body in bodies:
            futures.append(pool.submit(client.post, "/v1/completions", json=body))
            assert submitted.get(timeout=10) == body["prompt"]
        backend.gate.set()
        texts = [f.result(timeout=60).json()["choices"][0]["text"] for f in futures]
    assert texts == [body["prompt"] for body in bodies]
    # Sequence ids in arrival order: 0 runs, 1 waits for KV, 2 is the interactive one.
    steps = [{w.seq_id for w in work} for work in backend.steps]
    assert any({0, 2} <= ids for ids in steps), "the interactive request waited"
    assert not any({0, 1} <= ids for ids in steps)


def test_interactive_must_be_a_boolean(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": "alpha", "prompt": "hi", "interactive": 1})
    assert_error(r, 400, param="interactive")
