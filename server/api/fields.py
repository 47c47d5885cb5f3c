"""Checks every dialect's parser shares: JSON types, numbers in range, sampling, stop
strings. Each raises :class:`InvalidRequest` naming the field; the dialect's error
renderer decides how that name reaches the client."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from backends.base import INTEGER_SAMPLING, SAMPLING_RANGES, GrammarError, SamplingParams
from backends.llamacpp.grammars import check_schema
from server.errors import InvalidRequest

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256


def request_id() -> str:
    return uuid.uuid4().hex[:24]


def as_object(body: Any, what: str = "the request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return body


def boolean(fields: Mapping[str, Any], name: str, param: str | None = None) -> bool:
    value = fields.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{param or name}' must be a boolean", param=param or name)
    return value


def positive_int(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
    return value


def number(fields: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= value <= hi:
        raise InvalidRequest(f"'{name}' must be a number from {lo:g} to {hi:g}", param=name)
    return float(value)


def sampling(
    fields: Mapping[str, Any],
    defaults: SamplingParams,
    ranges: Mapping[str, tuple[float, float]] = SAMPLING_RANGES,
) -> SamplingParams:
    """``defaults`` with the sampling fields of ``fields`` (those in ``ranges``, each
    within its range; the integer ones whole) and ``ignore_eos``."""
    changes: dict[str, Any] = {}
    for name, (lo, hi) in ranges.items():
        value = number(fields, name, lo, hi)
        if value is None:
            continue
        if name not in INTEGER_SAMPLING:
            changes[name] = value
            continue
        if value != int(value):
            raise InvalidRequest(f"'{name}' must be an integer", param=name)
        raw = fields[name]  # an int keeps every bit; a float was range-checked
        changes[name] = raw if type(raw) is int else int(value)
    if fields.get("ignore_eos") is not None:
        changes["ignore_eos"] = boolean(fields, "ignore_eos")
    return replace(defaults, **changes)


def stop_strings(value: Any, param: str = "stop") -> tuple[str, ...]:
    """A string or an array of strings, within the count and length limits."""
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest(f"'{param}' must be a string or an array of strings", param=param)
    if len(stops) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise InvalidRequest(
            f"'{param}' allows at most {MAX_STOP_STRINGS} strings of {MAX_STOP_LENGTH} characters",
            param=param,
        )
    return tuple(s for s in stops if s)


def schema_text(schema: Any, param: str) -> str:
    """A JSON schema's text once its depth, size and ``$ref`` cycles pass the limits."""
    try:
        return check_schema(schema)
    except GrammarError as exc:
        raise InvalidRequest(str(exc), param=param) from exc
