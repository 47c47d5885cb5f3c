"""JSON as it streams: where a value ends, the head of a call object (its name, and
where its arguments start), and a call written as one JSON object."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from server.engine.parsers.calls import Calls, Piece

ARGUMENT_KEYS = ("arguments", "parameters")
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_SPACE = " \t\r\n"


class JsonScanner:
    """Finds where one JSON value ends in text fed in pieces, from its first character:
    it follows strings, their escapes and the nesting of brackets, and checks nothing."""

    def __init__(self) -> None:
        self._depth = 0
        self._string = False
        self._escape = False
        self._scalar = False  # a number or a literal: ends before a delimiter
        self.done = False

    def feed(self, text: str) -> int:
        """How many characters of ``text`` belong to the value: all until it ends."""
        for i, ch in enumerate(text):
            if self.done:
                return i
            if self._string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._string = False
                    self.done = self._depth == 0
            elif self._scalar:
                if ch in _SPACE or ch in ",:]}":
                    self.done = True
                    return i
            elif ch == '"':
                self._string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                self.done = self._depth <= 0
            elif self._depth == 0:
                self._scalar = True
        return len(text)


@dataclass(frozen=True, slots=True)
class Head:
    """A call object's name and where its arguments value starts."""

    name: str
    at: int


class _More(Exception):
    """The text ends before the head does."""


class _Not(Exception):
    """The text is no call object with its name before its arguments."""


MORE, NOT = "more", "not"


def read_head(text: str, keys: Sequence[str] = ARGUMENT_KEYS) -> Head | str:
    """``{"name": "NAME", "arguments": `` and the first character of the arguments (a
    ``"type"`` or ``"id"`` may come first): the :class:`Head`, :data:`MORE` while the
    text could still become one, :data:`NOT` once it cannot. The answer for a text is
    the answer for any longer text that begins with it."""
    cursor = _Cursor(text)
    try:
        cursor.literal("{")
        name = None
        while True:
            key = cursor.string()
            cursor.literal(":")
            if key in keys and name is not None:
                return Head(name, cursor.value_start())
            if key == "name":
                name = cursor.string()
            elif key in ("type", "id"):
                cursor.string()
            else:
                return NOT
            cursor.literal(",")
    except _More:
        return MORE
    except _Not:
        return NOT


class _Cursor:
    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in _SPACE:
            self.at += 1

    def literal(self, word: str) -> None:
        self.space()
        got = self.text[self.at : self.at + len(word)]
        if got != word:
            raise _More if word.startswith(got) else _Not
        self.at += len(word)

    def string(self) -> str:
        """A string with no escapes (a name or a key)."""
        self.literal('"')
        end = self.text.find('"', self.at)
        body = self.text[self.at : end if end >= 0 else len(self.text)]
        if "\\" in body:
            raise _Not
        if end < 0:
            raise _More
        self.at = end + 1
        return body

    def value_start(self) -> int:
        self.space()
        if self.at >= len(self.text):
            raise _More
        return self.at


class CallObject:
    """A call written as one JSON object, ``{"name": ..., "arguments": {...}}`` (or
    ``"parameters"``), from its ``{``: the call starts once its name is read and its
    arguments stream while they are an object; other shapes are read whole at the end."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._object = JsonScanner()
        self._arguments = JsonScanner()
        self._text = ""
        self.head: Head | str = MORE
        self._sent = ""  # the arguments' text streamed so far
        self._streaming = False

    @property
    def done(self) -> bool:
        return self._object.done

    def read(self, text: str) -> tuple[list[Piece], int]:
        """The pieces of ``text`` and how many of its characters the object holds."""
        used = self._object.feed(text)
        self._text += text[:used]
        out: list[Piece] = []
        if self.head == MORE:
            self.head = read_head(self._text)
            if isinstance(self.head, Head):
                self._streaming = self._text[self.head.at] == "{"
                out += self._calls.start(self.head.name)
        if self._streaming and not self._arguments.done:
            assert isinstance(self.head, Head)
            new = self._text[self.head.at + len(self._sent) :]
            piece = new[: self._arguments.feed(new)]
            self._sent += piece
            out += self._calls.arguments(piece)
        return out, used

    def finish(self) -> list[Piece]:
        """The call, as the object stands."""
        head = self.head.name if isinstance(self.head, Head) else None
        if self._streaming and head is not None:
            return self._calls.finish(head, self._sent)
        try:
            value = json.loads(self._text)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            found = _NAME.search(self._text)
            name = head if head is not None else found.group(1) if found else ""
            return self._calls.finish(name, self._text, malformed=True)
        name = value["name"] if head is None else head
        key = next((k for k in ARGUMENT_KEYS if k in value), None)
        arguments = value[key] if key else {}
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return self._calls.finish(name, arguments, malformed=True)
        return self._calls.finish(name, json.dumps(arguments, ensure_ascii=False))


class TaggedCall:
    """The text between a call's tags (Hermes' ``<tool_call>``): a JSON call object, or
    anything else, returned as written and counted as a failure."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._object: CallObject | None = None
        self._raw = ""

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        body = text
        if self._object is None:
            self._raw += text
            body = self._raw.lstrip()
            if not body.startswith("{"):
                return [], len(text), False
            self._object = CallObject(self._calls)
        pieces, _ = self._object.read(body)  # what follows the object is dropped
        return pieces, len(text), False

    def finish(self, text: str) -> list[Piece]:
        pieces, _, _ = self.read(text)
        if self._object is not None:
            return pieces + self._object.finish()
        found = _NAME.search(self._raw)
        name = found.group(1) if found else ""
        return self._calls.finish(name, self._raw.strip(), malformed=True)


class CallObjects:
    """Call objects one after another, apart by ``separator`` (and ended by ``closer``,
    if one is given); the run ends at the first other text after a call, left to the
    content. Text where an object should start is kept to the end, a failed call."""

    def __init__(self, calls: Calls, separator: str | None, closer: str | None = None) -> None:
        self._calls = calls
        self._separator, self._closer = separator, closer
        self._object: CallObject | None = None
        self._raw: str | None = None  # text that is no call object
        self._after = False  # a call object ended: a separator or the run's end follows

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        out: list[Piece] = []
        at = 0
        while True:
            if self._raw is not None:
                self._raw += text[at:]
                return out, len(text), False
            if self._object is None:
                start = text[at:].lstrip()
                if not start:
                    return out, at if self._after else len(text), False
                at = len(text) - len(start)
                if self._after:
                    if self._closer is not None and start.startswith(self._closer):
                        return out, at + len(self._closer), True
                    if self._separator is None or not start.startswith(self._separator):
                        return out, at, True
                    self._after, at = False, at + len(self._separator)
                    continue
                if not start.startswith("{"):
                    self._raw = ""
                    continue
                self._object = CallObject(self._calls)
            pieces, used = self._object.read(text[at:])
            out, at = out + pieces, at + used
            if not self._object.done:
                return out, at, False
            out += self._object.finish()
            self._object, self._after = None, True

    def finish(self, text: str) -> list[Piece]:
        out, _, _ = self.read(text)
        if self._object is not None:
            return out + self._object.finish()
        if self._raw is not None and self._raw.strip():
            return out + self._calls.finish("", self._raw.strip(), malformed=True)
        return out
