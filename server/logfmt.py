"""Log lines that a client cannot forge: control characters in messages are escaped.

A model name, a Host header or a path is client text; with a raw newline or an ANSI
escape in it a client could start a fake log line or rewrite a terminal. Only the
message is escaped: a traceback, appended after it, keeps its lines.
"""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROLS}


def escape_controls(text: str) -> str:
    """``text`` with C0/C1 controls, DEL and the Unicode line separators escaped."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def configure(level: str) -> None:
    """The root logger writes escaped lines to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
