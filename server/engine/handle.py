"""What the HTTP side and the hub need of a model's engine, wherever it runs: a thread
of this process (:class:`~server.engine.loop.Engine`) or a runner process of its own
(:class:`~server.engine.remote.RemoteEngine`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Protocol

from backends.base import Capabilities
from server.engine.inbox import RequestStream
from server.engine.loop import EngineState
from server.engine.requests import EngineRequest


class ModelEngine(Protocol):
    name: str
    state: EngineState
    error: str | None

    @property
    def capabilities(self) -> Capabilities | None:
        """The loaded model's capabilities; None until it is loaded."""
        ...

    @property
    def vocab_size(self) -> int: ...

    def start(self) -> None: ...

    def wait_loaded(self, timeout: float | None = None) -> bool: ...

    def submit(self, request: EngineRequest, loop: asyncio.AbstractEventLoop) -> RequestStream:
        """Queue a request; its events arrive on the returned stream. Raises
        ModelUnavailable when the model is not ready."""
        ...

    def abort(self, request_id: str) -> None:
        """The client went away: drop its sequence."""
        ...

    def invoke(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """``backend.method(*args, **kwargs)`` beside the engine (tokenize and the like)."""
        ...

    def cancel_all(self, message: str) -> None:
        """End every request of this engine with a 503 error event."""
        ...

    def stop(self, timeout: float = 30.0) -> None: ...

    def died_serving(self) -> bool:
        """The engine served and then failed for good, so this process should exit for
        its supervisor to restart it (an in-process engine; a runner restarts itself)."""
        ...

    def check(self) -> None:
        """The watchdog's beat: find an engine that stopped answering."""
        ...

    @property
    def pid(self) -> int | None:
        """The runner process's id; None for an engine in this process."""
        ...

    def resident_bytes(self) -> int | None:
        """Memory held for this model alone, where it can be told apart."""
        ...
