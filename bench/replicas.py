"""Two hearth replicas behind a real HAProxy, and a load of streams through it.

Shared by the fault test (tests/e2e/test_haproxy.py) and the benchmark
(bench/haproxy.py). HAProxy runs the repository's deploy/haproxy/hearth.cfg with only
its addresses, socket and log target rewritten; its runtime socket says which servers
it counts as up. Each stream records which replica answered (the ``hearth-replica``
header the configuration adds) and how it ended: whole (a finish reason, then
``[DONE]``), with an error (a status, an SSE error event, a cut connection), or cut
without a word, which must never happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.conftest import serve

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "haproxy" / "hearth.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SERVER_LINE = re.compile(r"^    server (\S+) \S+$", re.M)
MODEL = ("qwen2.5-coder-0.5b",)
# A stopping replica keeps serving for 3 s with readiness 503: longer than HAProxy's
# inter 1s x fall 2, so it leaves the pool before its drain refuses anything.
DRAINING = {"HEARTH_DRAIN_NOTICE_SECONDS": "3", "HEARTH_DRAIN_SECONDS": "120"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connection_limit() -> int:
    """The shipped ``maxconn`` (4096), or fewer where this process may open too few files:
    HAProxy needs two descriptors a connection and refuses to start without them (a CI
    shell may allow 1,024). A service raises the limit itself (systemd's LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by haproxy
        soft = hard
    return 4096 if soft == resource.RLIM_INFINITY else max(64, min(4096, (soft - 128) // 2))


def haproxy_config(port: int, replicas: list[int], sock: Path) -> str:
    """The shipped configuration, listening on ``port`` for replicas on local ports."""
    text = CONFIG.read_text()
    names = SERVER_LINE.findall(text)
    if len(names) != len(replicas):
        raise ValueError(f"{CONFIG} has {len(names)} servers, not {len(replicas)}")
    ports = iter(replicas)
    text = SERVER_LINE.sub(lambda m: f"    server {m[1]} 127.0.0.1:{next(ports)}", text)
    for old, new in (
        ("    maxconn 4096\n", f"    maxconn {connection_limit()}\n"),
        ("    bind :8080\n", f"    bind 127.0.0.1:{port}\n"),
        ("    log /dev/log local0\n", "    log stdout format raw local0\n"),
        ("stats socket /run/haproxy/hearth.sock ", f"stats socket {sock} "),
    ):
        if text.count(old) != 1:
            raise ValueError(f"{CONFIG} no longer has {old.strip()!r} once")
        text = text.replace(old, new)
    return text


class Haproxy:
    """A foreground ``haproxy`` process on the shipped configuration."""

    def __init__(self, folder: Path, replicas: list[int]) -> None:
        self.port = free_port()
        self.sock = folder / "haproxy.sock"
        self.names = SERVER_LINE.findall(CONFIG.read_text())
        config = folder / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, replicas, self.sock))
        self.log = folder / "haproxy.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)], stdout=sink, stderr=subprocess.STDOUT
            )
        self.base = f"http://127.0.0.1:{self.port}"

    def states(self) -> dict[str, str]:
        """Each server's status as HAProxy counts it (``UP``, ``DOWN``, ``UP 1/2``...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.sock))
            conn.sendall(b"show stat\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r["svname"] in self.names}

    def wait_state(self, server: str, status: str, timeout: float = 120.0) -> float:
        """Block until HAProxy counts ``server`` as ``status``; the monotonic time then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text(errors='replace')}")
            with contextlib.suppress(OSError):
                if self.states().get(server) == status:
                    return time.monotonic()
            time.sleep(0.05)
        raise TimeoutError(f"{server} not {status} after {timeout:.0f} s: {self.states()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def haproxy(folder: Path, replicas: list[int]) -> Iterator[Haproxy]:
    proxy = Haproxy(folder, replicas)
    try:
        for name in proxy.names:
            proxy.wait_state(name, "UP")
        yield proxy
    finally:
        proxy.stop()


@dataclass(slots=True)
class Outcome:
    """One streamed request through the balancer."""

    worker: int
    started: float
    ended: float = 0.0
    replica: str | None = None
    status: int | None = None
    chunks: int = 0
    reason: str | None = None  # the finish reason
    finished: bool = False  # a finish reason, then [DONE]
    error: str | None = None  # a status, an SSE error event, or a cut connection

    @property
    def whole(self) -> bool:
        return self.finished and self.error is None

    @property
    def silent(self) -> bool:
        """Cut without a word: neither whole nor failed loudly."""
        return not self.finished and self.error is None


@dataclass
class Load:
    """``workers`` clients sending streamed chat requests back to back through ``base``.
    Worker ``i`` sends a session key in ``sessions[i]`` (header name, value) if any."""

    base: str
    workers: int
    max_tokens: int = 48
    sessions: dict[int, tuple[str, str]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: bool = False

    def in_flight(self, replica: str, most_chunks: int) -> list[Outcome]:
        """Streams under way on ``replica`` that have had 1 to ``most_chunks`` chunks."""
        return [
            o
            for o in self.outcomes
            if not o.ended and o.replica == replica and 0 < o.chunks <= most_chunks
        ]

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.workers * 2)
        async with httpx.AsyncClient(base_url=self.base, timeout=600, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, i) for i in range(self.workers)))

    async def _worker(self, client: httpx.AsyncClient, i: int) -> None:
        turn = 0
        while not self.stopping:
            turn += 1
            outcome = Outcome(worker=i, started=time.monotonic())
            self.outcomes.append(outcome)
            await self._stream(client, outcome, f"Count from {turn % 7} to {turn % 7 + 40}.")
            outcome.ended = time.monotonic()
            if outcome.status not in (None, 200):
                await asyncio.sleep(0.2)

    async def _stream(self, client: httpx.AsyncClient, outcome: Outcome, prompt: str) -> None:
        headers = dict([self.sessions[outcome.worker]]) if outcome.worker in self.sessions else {}
        body = {
            "model": "default", "stream": True, "max_tokens": self.max_tokens,
            "temperature": 0, "messages": [{"role": "user", "content": prompt}],
        }  # fmt: skip
        try:
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as resp:
                outcome.status = resp.status_code
                outcome.replica = resp.headers.get("hearth-replica")
                if resp.status_code != 200:
                    outcome.error = f"status {resp.status_code}: {(await resp.aread())[:200]!r}"
                    return
                async for line in resp.aiter_lines():
                    self._read(outcome, line)
        except httpx.HTTPError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _read(outcome: Outcome, line: str) -> None:
        if not line.startswith("data: "):
            return
        if line == "data: [DONE]":
            outcome.finished = outcome.reason is not None
            return
        event = json.loads(line[6:])
        if "error" in event:
            outcome.error = f"error event: {event['error'].get('message')}"
            return
        outcome.chunks += 1
        choices = event.get("choices") or [{}]
        outcome.reason = choices[0].get("finish_reason") or outcome.reason


class Replicas:
    """Two ``hearth serve`` processes (the default model), each restartable on its port."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack) -> None:
        self.folder, self.stack = folder, stack
        self.ports = [free_port(), free_port()]
        self.starts = 0
        self.procs = [self.start(0), self.start(1)]

    def start(self, i: int) -> subprocess.Popen[bytes]:
        self.starts += 1
        procs: list[subprocess.Popen[bytes]] = []
        log = self.folder / f"replica{i + 1}-{self.starts}.log"
        self.stack.enter_context(
            serve(log, MODEL, env=DRAINING, procs=procs, port=self.ports[i])
        )  # fmt: skip
        return procs[0]


def during(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    return [o for o in outcomes if start < o.started < end]


async def until(check: Callable[[], bool], what: str = "the load") -> None:
    deadline = time.monotonic() + 180
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not get there")
        await asyncio.sleep(0.05)


async def drain_then_kill(
    replicas: Replicas, proxy: Haproxy, load: Load, before: float = 0, total: float = 0
) -> dict[str, float]:
    """Under ``load``: SIGTERM hearth1 (after ``before`` seconds, and a whole stream per
    worker); start it again once it has exited and a stream has started since HAProxy
    counted it down; SIGKILL hearth2 while it streams; stop the load once two streams
    started after HAProxy counted hearth2 down have ended, ``total`` seconds from the
    start at the earliest. The moments (monotonic)."""
    (first, second), t = replicas.procs, {"start": time.monotonic()}
    await asyncio.sleep(before)
    await until(lambda: all(any(o.worker == w and o.whole for o in load.outcomes)
                            for w in range(load.workers)))  # fmt: skip
    t["sigterm"] = time.monotonic()
    first.send_signal(signal.SIGTERM)
    t["first_down"] = await asyncio.to_thread(proxy.wait_state, "hearth1", "DOWN")
    t["first_exit_code"] = float(await asyncio.to_thread(first.wait, 180))
    await until(lambda: any(o.started > t["first_down"] for o in load.outcomes))
    t["restart"] = time.monotonic()
    replicas.procs[0] = await asyncio.to_thread(replicas.start, 0)
    t["first_up"] = await asyncio.to_thread(proxy.wait_state, "hearth1", "UP")
    await until(lambda: bool(load.in_flight("hearth2", most_chunks=load.max_tokens // 3)))
    victims = load.in_flight("hearth2", most_chunks=load.max_tokens // 3)
    second.kill()
    t["sigkill"] = time.monotonic()
    t["victim_started"] = victims[0].started
    t["second_down"] = await asyncio.to_thread(proxy.wait_state, "hearth2", "DOWN")
    await until(lambda: len([o for o in during(load.outcomes, t["second_down"], 1e12)
                             if o.ended]) >= 2)  # fmt: skip
    await asyncio.sleep(max(0.0, t["start"] + total - time.monotonic()))
    return t


def run_under_load(
    replicas: Replicas, proxy: Haproxy, load: Load, before: float = 0, total: float = 0
) -> dict[str, float]:
    """:func:`drain_then_kill` with the load running beside it; the load ends with it."""

    async def run() -> dict[str, float]:
        traffic = asyncio.create_task(load.run())
        try:
            return await drain_then_kill(replicas, proxy, load, before, total)
        except TimeoutError as exc:
            failed = [o for o in load.outcomes if not o.whole and o.ended]
            raise TimeoutError(
                f"{exc}: {len(load.outcomes)} streams, {len(failed)} failed, the last "
                f"{failed[-3:]}; HAProxy counts {proxy.states()}"
            ) from exc
        finally:
            load.stopping = True
            await traffic

    return asyncio.run(run())
