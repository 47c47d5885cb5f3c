"""Models on demand, in-process with the fake backend: loaded by the first request, one
load however many wait for it, unloaded when idle, never while serving, within a
memory budget that holds one model at a time."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from backends.base import Backend, LoadRequest
from backends.hardware import detect
from backends.registry import PluginInfo
from server.api import loading
from server.api.app import create_app
from server.config import FOREVER, load_models_file, parse_duration
from server.engine import hub as hub_module
from server.engine.hub import ModelHub
from server.engine.metrics import Metrics
from server.engine.residency import COMPUTE_BYTES, Resident, make_room
from tests.api.conftest import BASE_URL
from tests.fakes import FakeBackend, FakePlugin

MODELS = """
default = "a"
[models.a]
backend = "fake"
path = "a.fake"
[models.b]
backend = "fake"
path = "b.fake"
[models.zero]
backend = "fake"
path = "z.fake"
keep_alive = 0
"""


def chat(model: str, text: str = "hi") -> dict[str, object]:
    return {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("90s", 90.0), ("250ms", 0.25), (0, 0.0), (12, 12.0),
     (-1, FOREVER), ("-1", FOREVER), ("-5m", FOREVER)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "", "m", True, None, "1x"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_make_room_unloads_idle_models_least_recently_used_first() -> None:
    old, new = Resident("old", 4, True, 1.0), Resident("new", 4, True, 2.0)
    busy = Resident("busy", 4, False, 0.0)
    assert make_room([old, new], 2, 10) == []
    assert make_room([new, old, busy], 4, 12) == ["old"]
    assert make_room([new, old, busy], 8, 12) == ["old", "new"]
    assert make_room([busy], 9, 12) is None  # never a busy one


@pytest.fixture
def one_at_a_time(tmp_path: Path) -> Iterator[tuple[TestClient, ModelHub, FakePlugin]]:
    """Each fake model is sized at the compute allowance; the budget holds one."""
    (tmp_path / "models.toml").write_text(MODELS)
    plugin = FakePlugin()
    hub = ModelHub(
        load_models_file(tmp_path / "models.toml", tmp_path), ["a"], hardware=detect(),
        metrics=Metrics(), max_waiting=16, plugins={"fake": PluginInfo("fake", plugin, None)},
        memory_budget=COMPUTE_BYTES + COMPUTE_BYTES // 2, keep_alive=FOREVER,
    )  # fmt: skip
    app = create_app(hub)
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        yield client, hub, plugin


def states(client: TestClient) -> dict[str, str]:
    return {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"]}


def test_alternating_requests_swap_the_models_and_are_all_served(
    one_at_a_time: tuple[TestClient, ModelHub, FakePlugin],
) -> None:
    client, hub, plugin = one_at_a_time
    for model in ("b", "a", "b", "a"):
        r = client.post("/v1/chat/completions", json=chat(model, model))
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == model
        assert set(hub.engines) == {model}  # the other was unloaded to make room
    assert len(plugin.loaded) == 5  # a at start, then one load per swap
    unloads = hub.metrics.get("hearth_model_unloads_total", model="a", reason="memory")
    assert unloads == 2
    assert all(backend.closed for backend in plugin.loaded[:-1])


def test_a_model_serving_a_stream_is_never_unloaded_for_another(
    one_at_a_time: tuple[TestClient, ModelHub, FakePlugin],
) -> None:
    client, hub, plugin = one_at_a_time
    backend = plugin.loaded[0]
    backend.gate.clear()  # a's steps wait: its request is in flight
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(client.post, "/v1/chat/completions", json=chat("a", "long"))
        time.sleep(0.2)
        refused = client.post("/v1/chat/completions", json=chat("b"))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "held by models serving requests: a" in refused.json()["error"]["message"]
        assert set(hub.engines) == {"a"} and not backend.closed
        backend.gate.set()
        assert held.result().status_code == 200
    assert client.post("/v1/chat/completions", json=chat("b")).status_code == 200


def test_eight_requests_for_an_unloaded_model_load_it_once(
    one_at_a_time: tuple[TestClient, ModelHub, FakePlugin],
) -> None:
    client, hub, plugin = one_at_a_time
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bodies = [chat("b", f"n{i}") for i in range(8)]
        replies = list(pool.map(lambda b: client.post("/v1/chat/completions", json=b), bodies))
    assert [r.status_code for r in replies] == [200] * 8
    assert hub.metrics.get("hearth_model_loads_total", model="b") == 1
    assert len(plugin.loaded) == 2


def test_keep_alive_zero_unloads_after_the_last_request(
    one_at_a_time: tuple[TestClient, ModelHub, FakePlugin],
) -> None:
    client, hub, plugin = one_at_a_time
    assert client.post("/v1/chat/completions", json=chat("zero")).status_code == 200
    assert states(client)["zero"] in ("ready", "idle")
    hub.check_engines()  # the watchdog's beat
    assert "zero" not in hub.engines
    deadline = time.monotonic() + 5  # the engine stops on a thread of its own
    while not plugin.loaded[-1].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert plugin.loaded[-1].closed
    assert states(client)["zero"] == "not_loaded"
    assert hub.metrics.get("hearth_model_unloads_total", model="zero", reason="idle") == 1


def test_load_and_unload_by_hand(one_at_a_time: tuple[TestClient, ModelHub, FakePlugin]) -> None:
    client = one_at_a_time[0]
    loaded = client.post("/models/load", json={"model": "b"})
    assert loaded.status_code == 200 and loaded.json()["state"] == "ready"
    unloaded = client.post("/models/unload", json={"model": "b"})
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "not_loaded"
    missing = client.post("/models/load", json={"model": "/etc/passwd"})
    assert missing.status_code == 404


def test_a_flood_of_loads_gets_429(
    one_at_a_time: tuple[TestClient, ModelHub, FakePlugin], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, _ = one_at_a_time
    monkeypatch.setattr(hub_module, "LOADS_PER_MINUTE", 3)
    codes = [client.post("/v1/chat/completions", json=chat(m)).status_code
             for m in ("b", "a", "b", "a")]  # fmt: skip
    # a at start, b, a: three loads; a fourth in the minute is refused, and the model
    # still loaded (a) keeps serving.
    assert codes == [200, 200, 429, 200]


def test_an_idle_model_shows_when_it_will_be_unloaded(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(MODELS)
    plugin = FakePlugin()
    hub = ModelHub(
        load_models_file(tmp_path / "models.toml", tmp_path), ["a"], hardware=detect(),
        metrics=Metrics(), max_waiting=4, plugins={"fake": PluginInfo("fake", plugin, None)},
        keep_alive=600,
    )  # fmt: skip
    with TestClient(create_app(hub), base_url=BASE_URL) as client:
        client.post("/v1/chat/completions", json=chat("b"))
        entry = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == "b")
        assert entry["state"] == "idle" and 590 < entry["unload_in_seconds"] <= 600
        preloaded = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == "a")
        assert preloaded["state"] == "ready" and preloaded["keep_alive_seconds"] is None
    assert isinstance(plugin.loaded[0], FakeBackend)


class SlowPlugin(FakePlugin):
    """Takes a while to load model b; a file named missing fails to load."""

    def load(self, request: LoadRequest) -> Backend:
        if request.name == "b":
            time.sleep(0.4)
        return super().load(request)


@pytest.mark.parametrize(
    ("route", "body", "ping", "end"),
    [
        ("/v1/chat/completions", chat("b", "streamed"), ": loading the model", "data: [DONE]"),
        (
            "/v1/messages",
            {**chat("b", "streamed"), "max_tokens": 20},
            "event: ping",
            "event: message_stop",
        ),
        (
            "/v1/responses",
            {"model": "b", "input": "streamed"},
            ": loading the model",
            "event: response.completed",
        ),
    ],
)
def test_a_stream_for_a_loading_model_keeps_alive_then_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str, body: dict[str, object],
    ping: str, end: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(loading, "KEEP_ALIVE_SECONDS", 0.05)
    (tmp_path / "models.toml").write_text(
        MODELS + '[models.gone]\nbackend = "fake"\npath = "missing.fake"\n'
    )
    hub = ModelHub(
        load_models_file(tmp_path / "models.toml", tmp_path), ["a"], hardware=detect(),
        metrics=Metrics(), max_waiting=4, plugins={"fake": PluginInfo("fake", SlowPlugin(), None)},
    )  # fmt: skip
    with TestClient(create_app(hub), base_url=BASE_URL) as client:
        text = client.post(route, json={**body, "stream": True}).text
        assert text.startswith(ping)  # sent while b loaded
        assert text.count(ping) >= 2 and end in text
        failed = client.post(route, json={**body, "model": "gone", "stream": True}).text
        assert "cannot open model file" in failed  # the load's failure, as an error event
