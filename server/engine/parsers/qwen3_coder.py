"""Qwen3-Coder's calls, XML in Hermes' tags::

    <tool_call>
    <function=NAME>
    <parameter=P>
    VALUE
    </parameter>
    </function>
    </tool_call>

Each value is turned into JSON by the type its tool's schema gives the parameter: a
string (or a parameter of no known type) stays a string and streams as written; a
number, boolean, object or array is read when the parameter closes (a value that is no
such JSON stays a string, and fails the schema check). One newline after the opening
tag and one before the closing tag are the template's, not the value's. A ``<function=``
with no ``<tool_call>`` around it is a call too, and so is a Hermes JSON call inside
``<tool_call>`` (what a grammar-forced call writes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from backends.base import Tool
from server.engine.parsers import hermes
from server.engine.parsers.base import ForcedCall, Region, TaggedParser, earliest, held
from server.engine.parsers.calls import Calls, Piece
from server.engine.parsers.jsontext import TaggedCall

CALL_OPEN, CALL_CLOSE = hermes.CALL_OPEN, hermes.CALL_CLOSE
CALL_END = CALL_CLOSE
FUNCTION, FUNCTION_CLOSE = "<function=", "</function>"
PARAMETER, PARAMETER_CLOSE = "<parameter=", "</parameter>"
_VALUE_ENDS = (PARAMETER_CLOSE, FUNCTION_CLOSE, PARAMETER)


class Qwen3CoderParser(TaggedParser):
    """Calls in ``<tool_call>`` tags or bare ``<function=`` blocks (above)."""

    opens = (CALL_OPEN, FUNCTION)

    def region(self, tag: str) -> tuple[Region | None, str | None]:
        if tag == FUNCTION:
            return XmlFunction(self._calls), FUNCTION_CLOSE
        return CallBlock(self._calls), CALL_CLOSE


class CallBlock:
    """The text between ``<tool_call>`` and ``</tool_call>``: XML functions, one after
    another, or else a JSON call (or text that is none, a failure)."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._inner: XmlFunction | TaggedCall | None = None
        self._any = False  # a function was read

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        out: list[Piece] = []
        at = 0
        while True:
            if self._inner is None:
                start = text[at:].lstrip()
                at = len(text) - len(start)
                if not start or FUNCTION.startswith(start):
                    return out, at, False
                if start.startswith(FUNCTION):
                    self._inner, at = XmlFunction(self._calls), at + len(FUNCTION)
                    self._any = True
                elif self._any:  # text after a function: dropped
                    return out, len(text), False
                else:
                    self._inner = TaggedCall(self._calls)
            pieces, used, ended = self._inner.read(text[at:])
            out, at = out + pieces, at + used
            if not ended:
                return out, at, False
            self._inner = None

    def finish(self, text: str) -> list[Piece]:
        if self._inner is None:
            if self._any:  # text after the functions: dropped
                return []
            self._inner = TaggedCall(self._calls)
        return self._inner.finish(text)


class XmlFunction:
    """One ``<function=NAME>...</function>``, from after ``<function=``; its arguments
    are JSON written as the parameters stream."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._name: str | None = None
        self._schema: Any = None
        self._parameter: str | None = None  # the open parameter's name
        self._string = True  # its value streams as a JSON string
        self._fresh = True  # its value has not started (its first newline is dropped)
        self._value = ""  # a value read whole: what of it came so far
        self._text = ""  # the arguments written so far

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        out: list[Piece] = []
        at = 0
        while True:
            if self._name is None:
                end = text.find(">", at)
                if end < 0:
                    return out, at, False
                out += self._start(text[at:end].strip())
                at = end + 1
            elif self._parameter is None:
                found = earliest(text[at:], (PARAMETER, FUNCTION_CLOSE))
                if found is None:  # text between parameters is dropped
                    return out, len(text) - held(text[at:], (PARAMETER, FUNCTION_CLOSE)), False
                skip, tag = found
                at += skip + len(tag)
                if tag == FUNCTION_CLOSE:
                    return out + self._end(), at, True
                end = text.find(">", at)
                if end < 0:
                    return out, at - len(tag), False
                out += self._open(text[at:end].strip())
                at = end + 1
            else:
                pieces, at, closed = self._read_value(text, at)
                out += pieces
                if not closed:
                    return out, at, False

    def finish(self, text: str) -> list[Piece]:
        """A ``</tool_call>`` or the end of the answer before ``</function>``: an open
        value ends there."""
        out, used, ended = self.read(text)
        if ended:
            return out
        rest = text[used:]
        if self._name is None:
            return self._calls.finish(rest.strip(), "{}", malformed=True)
        if self._parameter is not None:
            rest = rest.removeprefix("\n") if self._fresh else rest
            rest = rest[: len(rest) - held(rest, _VALUE_ENDS)]
            out += self._close_value(rest.removesuffix("\n"))
        return out + self._end()

    def _start(self, name: str) -> list[Piece]:
        self._name = name
        self._schema = self._calls.schema(name) or {}
        return self._calls.start(name) + self._write("{")

    def _open(self, parameter: str) -> list[Piece]:
        self._parameter, self._fresh, self._value = parameter, True, ""
        props = self._schema.get("properties") if isinstance(self._schema, dict) else None
        self._string = _is_string(props.get(parameter) if isinstance(props, dict) else None)
        key = ("" if self._text == "{" else ", ") + json.dumps(parameter) + ": "
        return self._write(key + ('"' if self._string else ""))

    def _read_value(self, text: str, at: int) -> tuple[list[Piece], int, bool]:
        """Read the open parameter's value: the pieces, where reading stopped, and
        whether the value ended."""
        if self._fresh:
            if at >= len(text):
                return [], at, False
            at += text[at] == "\n"
            self._fresh = False
        found = earliest(text[at:], _VALUE_ENDS)
        if found is None:
            safe = len(text) - held(text[at:], _VALUE_ENDS)
            if safe > at and text[safe - 1] == "\n":
                safe -= 1  # it may be the newline before the closing tag
            return self._more_value(text[at:safe]), safe, False
        skip, tag = found
        pieces = self._close_value(text[at : at + skip].removesuffix("\n"))
        return pieces, at + skip + (len(tag) if tag == PARAMETER_CLOSE else 0), True

    def _more_value(self, text: str) -> list[Piece]:
        if self._string:
            return self._write(json.dumps(text, ensure_ascii=False)[1:-1])
        self._value += text
        return []

    def _close_value(self, text: str) -> list[Piece]:
        self._parameter = None
        if self._string:
            return self._write(json.dumps(text, ensure_ascii=False)[1:-1] + '"')
        return self._write(_json_value(self._value + text))

    def _end(self) -> list[Piece]:
        assert self._name is not None
        return self._write("}") + self._calls.finish(self._name, self._text)

    def _write(self, text: str) -> list[Piece]:
        self._text += text
        return self._calls.arguments(text)


def _is_string(schema: Any) -> bool:
    """Whether a parameter's value is a string: its type says so, or it says none."""
    if not isinstance(schema, dict):
        return True
    kinds = schema.get("type")
    if kinds is None:
        alternatives = schema.get("anyOf") or schema.get("oneOf") or []
        kinds = [a.get("type") for a in alternatives if isinstance(a, dict)]
    kinds = kinds if isinstance(kinds, list) else [kinds]
    kinds = [k for k in kinds if k is not None]
    return not kinds or "string" in kinds


def _json_value(text: str) -> str:
    """A value of a type other than string as JSON: as written where it is JSON
    (``True``/``False`` too), else as a string."""
    value = text.strip()
    if value in ("True", "False"):
        return value.lower()
    try:
        json.loads(value)
    except ValueError:
        return json.dumps(text, ensure_ascii=False)
    return value


def forced(tools: Sequence[Tool]) -> ForcedCall:
    """A JSON call in the same tags, which the parser reads too: a grammar takes JSON."""
    return hermes.forced(tools)
