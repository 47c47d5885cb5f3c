"""What every output parser shares: the parser protocols, the driver of the formats
whose calls sit between tags in the answer's text, and how a forced call is written.

A parser is fed the answer's text as it is generated and returns pieces: content,
reasoning, and tool calls (started, their arguments as generated, and complete). It
holds back only what may still be the start of a tag, and white space next to a call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from backends.base import Tool
from server.engine.parsers.calls import Calls, Piece
from server.engine.requests import TextDelta


class Parser(Protocol):
    """A format's reader of one answer. ``calls`` and ``failures`` count the tool calls
    it returned and, of those, the ones that did not parse or match their tool's
    schema."""

    @property
    def calls(self) -> int: ...

    @property
    def failures(self) -> int: ...

    def feed(self, text: str) -> list[Piece]:
        """The pieces that the next text of the answer completes."""
        ...

    def flush(self) -> list[Piece]:
        """The end of the answer: what was held back, an unfinished call as it stands."""
        ...


class PlainText:
    """No format: the text is the content."""

    calls = failures = 0

    def feed(self, text: str) -> list[Piece]:
        return [TextDelta(text)] if text else []

    def flush(self) -> list[Piece]:
        return []


class Region(Protocol):
    """One call (or a run of calls) in the text, read as it streams."""

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        """Read ``text``, the region's text not yet used (up to its closing tag, if it
        has one): the pieces, how many characters were used, and whether the region
        ended after them (a region with a closing tag ends at that tag instead)."""
        ...

    def finish(self, text: str) -> list[Piece]:
        """The closing tag or the end of the answer; ``text`` is what was not used."""
        ...


class Buffered:
    """A parser that keeps the text it has not used in ``_buffer``; ``_run`` reads
    what it can of it (all of it when ``final``)."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        return self._run(final=False)

    def flush(self) -> list[Piece]:
        return self._run(final=True)

    def _run(self, *, final: bool) -> list[Piece]:
        raise NotImplementedError


class CallParser(Buffered):
    """A parser of tool calls: it counts them in ``_calls``."""

    def __init__(self, tools: Sequence[Tool], *, parallel: bool = True) -> None:
        super().__init__()
        self._calls = Calls(tools, parallel=parallel)

    @property
    def calls(self) -> int:
        return self._calls.count

    @property
    def failures(self) -> int:
        return self._calls.failures


class TaggedParser(CallParser):
    """The driver of formats whose calls are marked in the text: content until one of
    ``opens``, then a :class:`Region` from :meth:`region`, up to its closing tag or to
    where the region says it ended; then content again. White space between content and
    a call is dropped; content after the last call keeps its own."""

    opens: tuple[str, ...] = ()

    def __init__(self, tools: Sequence[Tool], *, parallel: bool = True) -> None:
        super().__init__(tools, parallel=parallel)
        self._region: Region | None = None
        self._close: str | None = None

    def region(self, tag: str) -> tuple[Region | None, str | None]:
        """The region that ``tag`` opens and its closing tag (None: the region finds its
        own end); no region: the tag is markup, dropped."""
        raise NotImplementedError

    def _enter(self, region: Region, close: str | None = None) -> None:
        self._region, self._close = region, close

    def _run(self, *, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while True:
            if self._region is None:
                found = earliest(self._buffer, self.opens)
                if found is None:
                    return out + self._content(final=final)
                at, tag = found
                head, self._buffer = self._buffer[:at], self._buffer[at + len(tag) :]
                out += content(head.rstrip())
                self._region, self._close = self.region(tag)
                continue
            pieces, ended = self._step(final=final)
            out += pieces
            if not ended:
                return out

    def _step(self, *, final: bool) -> tuple[list[Piece], bool]:
        """Read the open region: its pieces, and whether it ended."""
        assert self._region is not None
        text, close, closed = self._buffer, self._close, False
        if close is not None:
            at = text.find(close)
            if at >= 0:
                text, closed = text[:at], True
            elif not final:
                text = text[: len(text) - partial_tag(text, close)]
        pieces, used, ended = self._region.read(text)
        if ended:
            self._buffer = self._buffer[used:]
        elif closed or final:
            pieces += self._region.finish(text[used:])
            self._buffer = self._buffer[len(text) + (len(close or "") if closed else 0) :]
        else:
            self._buffer = self._buffer[used:]
            return pieces, False
        self._region = None
        return pieces, True

    def _content(self, *, final: bool) -> list[Piece]:
        """Content with no tag in it: all of it at the end (white space only where no
        call was made), else all but a tag's possible start and trailing white space."""
        if final:
            rest, self._buffer = self._buffer, ""
            return content(rest if rest.strip() or not self.calls else "")
        body = self._buffer[: len(self._buffer) - held(self._buffer, self.opens)].rstrip()
        self._buffer = self._buffer[len(body) :]
        return content(body)


def content(text: str) -> list[Piece]:
    return [TextDelta(text)] if text else []


def earliest(text: str, tags: Sequence[str]) -> tuple[int, str] | None:
    """The first of ``tags`` in ``text`` (the longest where two start together)."""
    found: tuple[int, str] | None = None
    for tag in tags:
        at = text.find(tag)
        if at >= 0 and (found is None or (at, -len(tag)) < (found[0], -len(found[1]))):
            found = (at, tag)
    return found


def partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def held(text: str, tags: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could begin one of ``tags``."""
    return max((partial_tag(text, tag) for tag in tags), default=0)


@dataclass(frozen=True, slots=True)
class ForcedCall:
    """How a grammar forces one call in a format: JSON matching ``schema`` written
    between the literal texts ``before`` and ``after``."""

    before: str
    schema: Any
    after: str


def call_objects(tools: Sequence[Tool], arguments_key: str = "arguments") -> Any:
    """The schema of a call written as ``{"name": ..., <arguments_key>: {...}}``, the
    call of one of ``tools``."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, arguments_key: json.loads(t.parameters)},
            "required": ["name", arguments_key],
        }
        for t in tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}
