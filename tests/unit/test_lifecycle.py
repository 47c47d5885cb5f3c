"""The server's watchdog and drain, with a stand-in hub (no sockets, no model)."""

from __future__ import annotations

import asyncio

import uvicorn

from server.api.lifecycle import HearthServer


class StubHub:
    def __init__(self, dead: list[str], inflight: int = 0) -> None:
        self.dead = dead
        self.inflight = inflight
        self.drained = False
        self.cut = False

    def dead_engines(self) -> list[str]:
        return self.dead

    def start_drain(self) -> None:
        self.drained = True

    def cut_remaining(self) -> None:
        self.cut = True
        self.inflight = 0


def server(hub: StubHub, drain: float = 0.2) -> HearthServer:
    return HearthServer(uvicorn.Config(app=None), hub, drain)  # type: ignore[arg-type]


def test_an_engine_that_dies_makes_the_process_exit_1() -> None:
    s = server(StubHub(["qwen"]))
    asyncio.run(asyncio.wait_for(s._watch_engines(), 5))
    assert s.should_exit and s.exit_code == 1


def test_drain_waits_then_cuts_what_is_left_and_exits_0() -> None:
    hub = StubHub([], inflight=2)
    s = server(hub)
    asyncio.run(asyncio.wait_for(s._drain(), 10))
    assert hub.drained and hub.cut and s.should_exit and s.exit_code == 0


def test_drain_ends_early_when_streams_finish() -> None:
    hub = StubHub([], inflight=0)
    s = server(hub, drain=60)
    asyncio.run(asyncio.wait_for(s._drain(), 5))
    assert hub.drained and not hub.cut and s.should_exit
