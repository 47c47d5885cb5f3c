"""The model's output parsers: reasoning split from the answer, and tool calls read in
the model's own format, as the text streams. One module per format; :mod:`.registry`
names them and :class:`OutputStream` runs them on a request's events.

Formats: reasoning ``think`` (:mod:`.think`) and ``harmony`` (:mod:`.harmony`, which is
a tool format too); tools ``hermes``, ``qwen3_coder``, ``llama3``, ``mistral`` and
``deepseek``.
"""

from __future__ import annotations

from server.engine.parsers.base import ForcedCall, Parser
from server.engine.parsers.calls import Piece, matches
from server.engine.parsers.registry import (
    REASONING_FORMATS,
    TOOL_FORMATS,
    UnknownFormat,
    call_end,
    forced_call,
    reasoning_parser,
    tool_parser,
)
from server.engine.parsers.stream import OutputStream

__all__ = [
    "REASONING_FORMATS",
    "TOOL_FORMATS",
    "ForcedCall",
    "OutputStream",
    "Parser",
    "Piece",
    "UnknownFormat",
    "call_end",
    "forced_call",
    "matches",
    "reasoning_parser",
    "tool_parser",
]
