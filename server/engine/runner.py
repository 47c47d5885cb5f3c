"""The runner process: one model's engine, alone in a process of its own.

``python -m server.engine.runner FD`` is started by :class:`server.engine.remote.RemoteEngine`
(``subprocess.Popen``: a fresh interpreter, never a fork of a process with threads, no
inherited file descriptor but ``FD``, one end of a socket pair). Over it, as pickled
tuples through :mod:`multiprocessing.connection`:

parent -> runner::

    ("load", plugin "module:Class", LoadRequest, max_waiting, default_max_tokens)
    ("submit", GenerationRequest | EmbeddingRequest)   ("abort", request_id)
    ("cancel_all", message)
    ("invoke", call_id, method, args, kwargs)   ("ping", n)   ("stop",)

runner -> parent::

    ("loaded", Capabilities) | ("load_failed", message)
    ("batch", [(request_id, Event), ...], [metric operations])   one per step, or less
    ("result", call_id, value, error)   ("pong", n)

The engine loop is :class:`~server.engine.loop.Engine` (an embedding or reranking
model's: :class:`~server.engine.embed_loop.EmbedEngine`), moved whole; its events
and metric updates go into one outbox, which a writer thread drains into one message at
a time, so a step's deltas travel together. The runner ends when the parent does (the
socket closes; on Linux also ``PR_SET_PDEATHSIG``), so no orphan holds model memory.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from backends.base import GENERATE
from server.engine.embed_loop import EmbedEngine
from server.engine.loop import Engine, EngineState
from server.engine.requests import Event

log = logging.getLogger("hearth.runner")
INVOKABLE = frozenset({"tokenize", "detokenize", "chat_prompt", "fim_prompt"})
_FLUSH = object()


class Outbox:
    """Events and metric updates from the engine thread, sent in batches by one writer
    thread: whatever has queued up while the last message was being sent goes in the
    next, so a step's deltas (pushed in a burst) travel as one message."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the writer and direct replies share the socket
        threading.Thread(target=self._write, name="runner-writer", daemon=True).start()

    def event(self, request_id: str, event: Event) -> None:
        self._queue.put(("event", (request_id, event)))

    def metric(self, op: str, *args: Any, **labels: str) -> None:
        self._queue.put(("metric", (op, args, labels)))

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(message)

    def _write(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [v for k, v in items if k == "event"]
            metrics = [v for k, v in items if k == "metric"]
            try:
                self.send(("batch", events, metrics))
            except OSError:
                os._exit(0)  # the parent is gone


class Sink:
    """A request's event sink inside the runner: into the outbox."""

    def __init__(self, request_id: str, outbox: Outbox) -> None:
        self.request_id = request_id
        self._outbox = outbox

    def push(self, event: Event) -> None:
        self._outbox.event(self.request_id, event)


class ForwardedMetrics:
    """The engine's metrics, forwarded to the parent's :class:`Metrics` in batches."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def set(self, name: str, value: float, **labels: str) -> None:
        self._outbox.metric("set", name, value, **labels)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._outbox.metric("inc", name, amount, **labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._outbox.metric("observe", name, value, **labels)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os._exit(0)


def _plugin(spec: str) -> Any:
    module, _, name = spec.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target()


def serve(conn: Connection) -> None:
    outbox = Outbox(conn)
    _, spec, load, max_waiting, default_max_tokens = conn.recv()
    kind = Engine if load.task == GENERATE else EmbedEngine
    engine = kind(
        load.name, _plugin(spec), load, metrics=ForwardedMetrics(outbox),  # type: ignore[arg-type]
        max_waiting=max_waiting, default_max_tokens=default_max_tokens,
    )  # fmt: skip
    engine.start()
    engine.wait_loaded()
    if engine.state is not EngineState.READY or engine.backend is None:
        outbox.send(("load_failed", engine.error or "the model failed to load"))
        return
    outbox.send(("loaded", engine.backend.capabilities))
    watch = threading.Thread(target=_exit_when_engine_dies, args=(engine,), daemon=True)
    watch.start()
    _read(conn, engine, outbox)


def _exit_when_engine_dies(engine: Engine) -> None:
    engine.join()
    if engine.state is EngineState.FAILED:
        log.error("the engine failed: %s", engine.error)
        logging.shutdown()
        os._exit(3)


def _read(conn: Connection, engine: Engine, outbox: Outbox) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone
        kind = message[0]
        if kind == "submit":
            engine.enqueue(message[1], Sink(message[1].request_id, outbox))
        elif kind == "abort":
            engine.abort(message[1])
        elif kind == "cancel_all":
            engine.cancel_all(message[1])
        elif kind == "invoke":
            _invoke(engine, outbox, *message[1:])
        elif kind == "ping":
            _ping(engine, outbox, message[1])
        elif kind == "stop":
            engine.stop()
            logging.shutdown()
            os._exit(0)


def _ping(engine: Engine, outbox: Outbox, n: int) -> None:
    """Answered by the engine thread between steps: a hung step leaves it unanswered."""
    engine.call(lambda _backend: n).add_done_callback(lambda _f: outbox.send(("pong", n)))


def _invoke(
    engine: Engine, outbox: Outbox, call_id: int, method: str, args: Any, kwargs: Any
) -> None:
    if method not in INVOKABLE:
        outbox.send(("result", call_id, None, f"no such backend method: {method}"))
        return

    def done(future: Any) -> None:
        error = future.exception()
        if error is None:
            outbox.send(("result", call_id, future.result(), None))
        else:
            outbox.send(("result", call_id, None, error))

    engine.invoke(method, *args, **kwargs).add_done_callback(done)


def main() -> None:
    _die_with_parent()
    # Plain lines on stderr: the server logs each, escaped, under the model's name.
    level = os.environ.get("HEARTH_LOG_LEVEL", "info").upper()
    known = level in logging.getLevelNamesMapping()
    logging.basicConfig(level=level if known else "INFO", stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    except Exception:
        log.exception("the runner failed")
        logging.shutdown()
        os._exit(2)
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
