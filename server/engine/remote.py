"""The HTTP process's handle on a model whose engine runs in a runner process.

:class:`RemoteEngine` has the interface of :class:`~server.engine.loop.Engine` (submit,
abort, invoke, cancel_all, stop, state), so routes and the hub need not know where the
engine runs. The runner (:mod:`server.engine.runner`) is a child process; a reader
thread here hands each event batch to the requests' streams and the metric updates to
the server's :class:`Metrics`, and notices when the runner ends.

A runner that dies (a signal, an exit) fails only its own requests: each gets one error
event saying the model's engine crashed and how, and the runner is started again after
a backoff. After ``MAX_CRASHES`` crashes within ``CRASH_WINDOW_S`` the model is
``failed``, with the reason. A runner that stops answering (a step that hangs) is killed
by :meth:`check`, which the server's watchdog calls, and counts as a crash. Its stderr
is logged line by line, and its last lines go with a crash into the log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from backends.base import BackendPlugin, Capabilities, LoadRequest
from server.engine.inbox import RequestStream
from server.engine.loop import EngineState
from server.engine.metrics import Metrics
from server.engine.requests import Embedded, EngineRequest, Failed, Finished
from server.errors import InternalError, ModelUnavailable

log = logging.getLogger("hearth.remote")
MAX_CRASHES = 3
CRASH_WINDOW_S = 300.0
BACKOFF_S = (1.0, 3.0, 9.0)
PING_EVERY_S = 5.0
STDERR_LINES = 30


class RemoteEngine:
    def __init__(
        self,
        name: str,
        plugin: BackendPlugin,
        load: LoadRequest,
        *,
        metrics: Metrics,
        max_waiting: int,
        default_max_tokens: int,
        hang_seconds: float = 120.0,
    ) -> None:
        self.name = name
        self.state = EngineState.LOADING
        self.error: str | None = None
        self.capabilities: Capabilities | None = None
        self.served = False  # reached READY at least once
        cls = type(plugin)
        self._spec = f"{cls.__module__}:{cls.__qualname__}"
        self._load = load
        self._metrics = metrics
        self._limits = (max_waiting, default_max_tokens)
        self._hang_seconds = hang_seconds
        self._lock = threading.Lock()
        self._streams: dict[str, RequestStream] = {}
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}
        self._ids = itertools.count()
        self._crashes: collections.deque[float] = collections.deque()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._loaded = threading.Event()
        self._stopping = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ping: tuple[int, float] | None = None  # unanswered ping: number, when sent
        self._answered = 0.0  # when the last ping was answered

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the runner; it loads the model (see :meth:`wait_loaded`)."""
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "server.engine.runner", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, start_new_session=True, env=_child_env(),
        )  # fmt: skip
        theirs.close()
        self._conn = Connection(ours.detach())
        max_waiting, default_max_tokens = self._limits
        self._send(("load", self._spec, self._load, max_waiting, default_max_tokens))
        threading.Thread(target=self._read, args=(self._proc, self._conn),
                         name=f"runner-{self.name}", daemon=True).start()  # fmt: skip
        threading.Thread(target=self._log_stderr, args=(self._proc,), daemon=True).start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        proc = self._proc
        if proc is None:
            return
        try:
            self._send(("stop",))
            proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(10)
        if self.state is EngineState.READY:
            self.state = EngineState.STOPPED

    def died_serving(self) -> bool:
        return False  # a runner that dies is started again, or the model is failed

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- the HTTP side ---------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.capabilities.vocab_size if self.capabilities else 0

    def submit(self, request: EngineRequest, loop: asyncio.AbstractEventLoop) -> RequestStream:
        if self.state is not EngineState.READY:
            raise ModelUnavailable(
                f"model {self.name!r} is {self.state.value}"
                + (f": {self.error}" if self.error else ""),
                retry_after=5,
            )
        stream = RequestStream(request.request_id, loop)
        with self._lock:
            self._streams[request.request_id] = stream
        self._send_or_fail(("submit", request))
        return stream

    def abort(self, request_id: str) -> None:
        self._send_or_fail(("abort", request_id))

    def cancel_all(self, message: str) -> None:
        self._send_or_fail(("cancel_all", message))

    def invoke(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``backend.method(*args, **kwargs)`` in the runner (tokenize and the like)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.state is not EngineState.READY:
            future.set_exception(ModelUnavailable(f"model {self.name!r} is {self.state.value}"))
            return future
        call_id = next(self._ids)
        with self._lock:
            self._calls[call_id] = future
        self._send_or_fail(("invoke", call_id, method, args, kwargs))
        return future

    def check(self) -> None:
        """The watchdog's beat: ping the engine loop; kill a runner whose last ping went
        unanswered for ``hang_seconds`` (a step that never ends)."""
        if self.state is not EngineState.READY:
            return
        now = time.monotonic()
        if self._ping is None and now - self._answered >= PING_EVERY_S:
            n = next(self._ids)
            self._ping = (n, now)
            self._send_or_fail(("ping", n))
        elif self._ping and now - self._ping[1] > self._hang_seconds and self._proc is not None:
            log.error("model %s: its engine has not answered for %.0f s; killing it",
                      self.name, now - self._ping[1])  # fmt: skip
            self._proc.kill()

    # -- the reader thread -----------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self._conn is not None
        with self._lock:
            self._conn.send(message)

    def _send_or_fail(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the runner is gone: the reader fails its work
            self._send(message)

    def _read(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        try:
            while True:
                self._handle(conn.recv())
        except (EOFError, OSError):
            pass
        code = proc.wait()
        conn.close()
        self._ended(code)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "batch":
            self._deliver(message[1], message[2])
        elif kind == "result":
            _, call_id, value, error = message
            with self._lock:
                future = self._calls.pop(call_id, None)
            if future is not None:
                future.set_exception(error) if error is not None else future.set_result(value)
        elif kind == "pong":
            self._ping, self._answered = None, time.monotonic()
        elif kind == "loaded":
            self.capabilities, self.state, self.error = message[1], EngineState.READY, None
            self.served = True
            self._metrics.set("hearth_kv_cache_capacity_tokens",
                              self.capabilities.context_length, model=self.name)  # fmt: skip
            self._loaded.set()
        elif kind == "load_failed":
            self.state, self.error = EngineState.FAILED, message[1]
            self._stopping = True  # a model that cannot load is not restarted
            self._loaded.set()

    def _deliver(self, events: list[tuple[str, Any]], metrics: list[Any]) -> None:
        for op, args, labels in metrics:
            getattr(self._metrics, op)(*args, **labels)
        for request_id, event in events:
            with self._lock:
                stream = self._streams.get(request_id)
                if isinstance(event, Finished | Embedded | Failed):
                    self._streams.pop(request_id, None)
            if stream is not None:
                stream.push(event)

    def _ended(self, code: int) -> None:
        how = _describe(code)
        with self._lock:
            streams, self._streams = self._streams, {}
            calls, self._calls = self._calls, {}
        if self._stopping:
            for stream in streams.values():
                stream.push(Failed(ModelUnavailable("the server is shutting down", retry_after=5)))
            return
        tail = "\n".join(self._stderr)
        log.error("model %s: its engine %s; its last output:\n%s", self.name, how, tail)
        error = InternalError(f"the model's engine crashed ({how}); it is restarting")
        for stream in streams.values():
            stream.push(Failed(error))
        for future in calls.values():
            future.set_exception(error)
        self._restart(how)

    def _restart(self, how: str) -> None:
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
            self._crashes.popleft()
        self._ping = None
        self.capabilities = None
        if len(self._crashes) >= MAX_CRASHES:
            self.state = EngineState.FAILED
            self.error = (f"its engine crashed {len(self._crashes)} times in "
                          f"{CRASH_WINDOW_S:.0f} s, the last time {how}")  # fmt: skip
            log.error("model %s is failed: %s", self.name, self.error)
            return
        self.state, self.error = EngineState.LOADING, f"restarting after its engine {how}"
        delay = BACKOFF_S[min(len(self._crashes), len(BACKOFF_S)) - 1]
        timer = threading.Timer(delay, self._start_again)
        timer.daemon = True
        timer.start()

    def _start_again(self) -> None:
        if not self._stopping:
            self._loaded.clear()
            self.start()

    def _log_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with proc.stderr:  # closed at the runner's end, not left to the collector
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                self._stderr.append(line)
                log.info("[%s] %s", self.name, line)

    def resident_bytes(self) -> int | None:
        """The runner's resident memory (Linux's /proc; None elsewhere or when gone)."""
        pid = self.pid
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None


def _child_env() -> dict[str, str]:
    """This environment, with this interpreter's import path: a plugin importable here
    (one a test registered from its own folder) is importable in the runner."""
    path = os.pathsep.join(p for p in sys.path if p)
    return {**os.environ, "PYTHONPATH": path}


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
