"""The server's watchdog and drain on a real hub, app and engine thread (a fake backend,
no sockets): the drain waits on the in-flight count that the relay really keeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.types import Message

from backends.base import Backend, Delta, LoadRequest
from backends.hardware import detect
from backends.registry import PluginInfo
from server.api.app import create_app
from server.api.lifecycle import HearthServer
from server.config import load_models_file
from server.engine.hub import ModelHub
from server.engine.metrics import Metrics
from tests.fakes import FakeBackend, FakePlugin

MODELS = """
default = "alpha"
[models.alpha]
backend = "fake"
path = "alpha.fake"
context_length = 100000
[models.gamma]
backend = "fake"
path = "missing.fake"
"""


class Endless(FakeBackend):
    """A model that never ends a reply by itself."""

    def _next(self, seq_id: int, seq: Any) -> Delta:
        return Delta(seq_id, 120, "x", eog=False)


class EndlessPlugin(FakePlugin):
    def load(self, request: LoadRequest) -> Backend:
        return Endless(request)


def make_hub(tmp_path: Path, plugin: FakePlugin, *names: str) -> ModelHub:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return ModelHub(
        load_models_file(path, tmp_path), list(names or ["alpha"]), hardware=detect(),
        metrics=Metrics(), max_waiting=4, plugins={"fake": PluginInfo("fake", plugin, None)},
    )  # fmt: skip


@asynccontextmanager
async def served(hub: ModelHub) -> AsyncIterator[Starlette]:
    """The app with its lifespan run: the models loaded, and stopped at the end."""
    app = create_app(hub)
    async with app.router.lifespan_context(app):
        yield app


async def post(
    app: Starlette,
    path: str,
    body: dict[str, Any],
    *,
    spec: str = "2.3",
    send: Callable[[Message], Awaitable[None]] | None = None,
) -> list[Message]:
    """One request straight into the ASGI app, from a client that stays until the
    response ends (unless ``send``, the server's own, says otherwise). The messages sent."""
    pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()
        raise AssertionError

    async def keep(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"localhost:8080"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    await app(scope, receive, send or keep)
    return sent


async def client_gone(message: Message) -> None:
    """An ASGI 2.4 server's send once the client has left: it raises an OSError."""
    raise ConnectionResetError("the client left")


async def leave_via_spec_2_4(app: Starlette, path: str, body: dict[str, Any]) -> None:
    with contextlib.suppress(ClientDisconnect):  # Starlette's word for that OSError
        await post(app, path, body, spec="2.4", send=client_gone)


async def leave_via_cancel(app: Starlette, path: str, body: dict[str, Any]) -> None:
    """The response's task cancelled while its first send waits on a client that does
    not read (uvicorn cancels its request tasks when a shutdown runs out of time)."""
    sending = asyncio.Event()

    async def stalled(message: Message) -> None:
        sending.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(post(app, path, body, send=stalled))
    await sending.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def body_text(sent: list[Message]) -> str:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "alpha", "messages": [{"role": "user", "content": content}], **fields}


def fake_of(hub: ModelHub) -> FakeBackend:
    backend = hub.engines["alpha"].backend
    assert isinstance(backend, FakeBackend)
    return backend


def server(hub: ModelHub, drain: float) -> HearthServer:
    return HearthServer(uvicorn.Config(app=None), hub, drain)  # type: ignore[arg-type]


async def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_an_engine_that_dies_makes_the_process_exit_1(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, FakePlugin())

    async def run() -> HearthServer:
        async with served(hub) as app:
            fake_of(hub).raise_steps = 3
            for _ in range(3):
                await post(app, "/v1/chat/completions", chat("doomed"))
            s = server(hub, drain=1)
            await asyncio.wait_for(s._watch_engines(), 10)
            return s

    s = asyncio.run(run())
    assert s.should_exit and s.exit_code == 1


def test_a_model_that_failed_to_load_is_not_an_engine_that_died(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, FakePlugin(), "alpha", "gamma")

    async def run() -> None:
        async with served(hub):
            assert hub.engines["gamma"].state.value == "failed"
            assert hub.dead_engines() == []

    asyncio.run(run())


@pytest.mark.parametrize("leave", [leave_via_spec_2_4, leave_via_cancel])
def test_a_stream_that_ends_before_its_body_starts_is_not_waited_for(
    tmp_path: Path, leave: Callable[[Starlette, str, dict[str, Any]], Awaitable[None]]
) -> None:
    """A streamed response can end before its body generator ever runs: the relay must
    still leave the in-flight count and abort the sequence, so a drain ends at once."""
    hub = make_hub(tmp_path, EndlessPlugin())
    streams = [
        ("/v1/chat/completions", chat("x", stream=True, max_tokens=90000)),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "stream": True, "max_tokens": 90000}),
        ("/infill", {"input_prefix": "a", "input_suffix": "b", "stream": True, "n_predict": 90000}),
    ]

    async def run() -> HearthServer:
        async with served(hub) as app:
            for path, body in streams:
                await leave(app, path, body)
                assert hub.inflight == 0, path
            aborted = {"model": "alpha", "finish_reason": "aborted"}
            await wait_until(lambda: hub.metrics.get("hearth_requests_total", **aborted) == 3)
            s = server(hub, drain=60)
            await asyncio.wait_for(s._drain(), 10)
            return s

    s = asyncio.run(run())
    assert s.should_exit and s.exit_code == 0


def test_drain_lets_a_stream_finish_then_exits_0(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, FakePlugin())

    async def run() -> tuple[HearthServer, str]:
        async with served(hub) as app:
            backend = fake_of(hub)
            backend.gate.clear()
            stream = asyncio.create_task(
                post(app, "/v1/chat/completions", chat("finish me", stream=True))
            )
            await wait_until(lambda: hub.inflight == 1)
            s = server(hub, drain=60)
            drain = asyncio.create_task(s._drain())
            await wait_until(lambda: hub.draining)
            assert not drain.done()  # it waits for the stream
            backend.gate.set()
            await asyncio.wait_for(drain, 30)
            return s, body_text(await stream)

    s, text = asyncio.run(run())
    assert s.should_exit and s.exit_code == 0
    assert '"finish_reason":"stop"' in text.replace(" ", "") and text.endswith("[DONE]\n\n")


def test_drain_window_over_cuts_streams_with_an_error_event(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, EndlessPlugin())

    async def run() -> tuple[HearthServer, str]:
        async with served(hub) as app:
            stream = asyncio.create_task(
                post(app, "/v1/chat/completions", chat("x", stream=True, max_tokens=90000))
            )
            await wait_until(lambda: hub.inflight == 1)
            s = server(hub, drain=0.2)
            await asyncio.wait_for(s._drain(), 30)
            assert hub.inflight == 0
            return s, body_text(await stream)

    s, text = asyncio.run(run())
    assert s.should_exit and s.exit_code == 0
    last = json.loads(text.split("data: ")[-2])
    assert "shutting down" in last["error"]["message"]


def test_readiness_turns_503_before_the_drain_refuses_requests(tmp_path: Path) -> None:
    """Within the notice a balancer sees 503 on /health/ready while a request still gets
    its answer; after it, the drain refuses new requests."""
    hub = make_hub(tmp_path, FakePlugin())

    async def run() -> tuple[str, str, str]:
        async with served(hub) as app:
            assert hub.ready()
            s = HearthServer(uvicorn.Config(app=None), hub, 60, notice_seconds=60)  # type: ignore[arg-type]
            drain = asyncio.create_task(s._drain())
            await wait_until(lambda: not hub.ready())
            assert "shutting down" in hub.not_ready_reason()
            served_in_notice = body_text(await post(app, "/v1/chat/completions", chat("hi")))
            s.notice_seconds = 0  # the notice ends
            await wait_until(lambda: hub.draining)
            refused = await post(app, "/v1/chat/completions", chat("late"))
            await asyncio.wait_for(drain, 10)
            return served_in_notice, str(refused[0].get("status")), body_text(refused)

    answer, status, refusal = asyncio.run(run())
    assert '"finish_reason":"stop"' in answer.replace(" ", "")
    assert status == "503" and "shutting down" in refusal
