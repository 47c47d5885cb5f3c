"""Running the server: graceful drain on SIGTERM, and exit when an engine dies.

The first SIGTERM (or SIGINT) turns readiness 503 at once. For ``notice_seconds``
(``HEARTH_DRAIN_NOTICE_SECONDS``, default 0) requests are still served, so a balancer
that polls readiness stops sending new ones before any is refused; then the drain: new
generation requests get 503 with ``Retry-After``, while running streams may finish for
up to ``drain_seconds``. Streams still running then end with a final SSE error event, the
models are freed, and the process exits 0. A second signal stops at once. An
in-process engine that dies while serving makes the process exit 1, so a supervisor
restarts it; a runner process that dies or hangs is replaced by its RemoteEngine and
the server stays up.

The process then leaves without the interpreter's teardown of native modules; see
``leave``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType
from typing import NoReturn

import uvicorn

from server.engine.hub import ModelHub

log = logging.getLogger("hearth.lifecycle")


class HearthServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        hub: ModelHub,
        drain_seconds: float,
        notice_seconds: float = 0.0,
    ) -> None:
        super().__init__(config)
        self.hub = hub
        self.drain_seconds = drain_seconds
        self.notice_seconds = notice_seconds
        self.exit_code = 0
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        watchdog = asyncio.create_task(self._watch_engines())
        try:
            await super().serve(sockets)
        finally:
            watchdog.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler (main thread). Unlike uvicorn's, it does not re-raise the
        signal afterwards: a drained server exits 0."""
        if self._draining or self._loop is None:
            log.warning("second %s: stopping now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        self._draining = True
        log.info(
            "%s: not ready; draining in %.0f s for up to %.0f s",
            signal.Signals(sig).name, self.notice_seconds, self.drain_seconds,
        )  # fmt: skip
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        self.hub.announce_drain()
        announced = time.monotonic()
        while time.monotonic() - announced < self.notice_seconds and not self.should_exit:
            await asyncio.sleep(0.05)
        self.hub.start_drain()
        deadline = time.monotonic() + self.drain_seconds
        while self.hub.inflight and time.monotonic() < deadline and not self.should_exit:
            await asyncio.sleep(0.05)
        if self.hub.inflight:
            log.warning("drain window over: ending %d stream(s)", self.hub.inflight)
            self.hub.cut_remaining()
            cut_deadline = time.monotonic() + 5
            while self.hub.inflight and time.monotonic() < cut_deadline:
                await asyncio.sleep(0.05)
        self.should_exit = True

    async def _watch_engines(self) -> None:
        while not self.should_exit:
            await asyncio.sleep(0.5)
            self.hub.check_engines()
            dead = self.hub.dead_engines()
            if dead:
                log.error("engine(s) died while serving: %s; exiting for a restart", dead)
                self.exit_code = 1
                self.should_exit = True
                return


def serve(
    hub: ModelHub, config: uvicorn.Config, drain_seconds: float, notice_seconds: float = 0.0
) -> int:
    server = HearthServer(config, hub, drain_seconds, notice_seconds)
    server.run()
    return server.exit_code


def leave(code: int) -> NoReturn:
    """End the process after a served run, skipping the interpreter's teardown.

    By now the engines are joined and the models freed. What teardown would still do is
    free the native modules (llama.cpp, NumPy's BLAS, MLX) in an order that varies from
    run to run, and now and then that aborts ("terminate called without an active
    exception", SIGABRT) after a clean drain: systemd and launchd then see a crash
    instead of exit 0. Flush the logs and exit at once instead.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
