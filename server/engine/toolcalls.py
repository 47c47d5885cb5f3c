"""Hermes-style tool calls, the one format hearth read before the output parsers:
the names the routes import, over :mod:`server.engine.parsers`."""

from __future__ import annotations

from collections.abc import Sequence

from backends.base import Tool
from server.engine.inbox import RequestStream
from server.engine.metrics import Metrics
from server.engine.parsers import OutputStream, matches
from server.engine.parsers.hermes import CALL_CLOSE, CALL_OPEN
from server.engine.parsers.hermes import HermesParser as ToolCallParser
from server.engine.requests import Event, ToolCallArguments, ToolCallStarted

__all__ = ["CALL_CLOSE", "CALL_OPEN", "ToolCallParser", "ToolCallStream", "matches"]


class ToolCallStream(OutputStream):
    """A request's event stream with its text split into content and Hermes calls, each
    call in one event at its end (as the routes read them before calls streamed)."""

    def __init__(
        self,
        inner: RequestStream,
        tools: Sequence[Tool],
        metrics: Metrics,
        model: str,
        *,
        parallel: bool = True,
    ) -> None:
        super().__init__(inner, tools=tools, metrics=metrics, model=model, parallel=parallel)

    async def next(self) -> Event:
        while True:
            event = await super().next()
            if not isinstance(event, ToolCallStarted | ToolCallArguments):
                return event
