"""``response_format`` parsed at the route boundary into a backend :class:`Constraint`.

The schema's depth and size are checked here so that it can be serialized safely; the
backend converts it to a grammar (and checks it again) on its engine thread.
"""

from __future__ import annotations

import re
from typing import Any

from backends.base import Constraint
from server.api.fields import schema_text
from server.errors import InvalidRequest

PARAM = "response_format"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_response_format(value: Any) -> Constraint | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text" and set(value) == {"type"}:
        return None
    if kind == "json_object" and set(value) == {"type"}:
        return Constraint()
    if kind == "json_schema" and set(value) == {"type", "json_schema"}:
        return _json_schema(value["json_schema"])
    raise InvalidRequest(
        '\'response_format\' must be {"type": "text"}, {"type": "json_object"} or '
        '{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}',
        param=PARAM,
    )


def _json_schema(value: Any) -> Constraint:
    param = f"{PARAM}.json_schema"
    if not isinstance(value, dict) or set(value) - {"name", "schema", "strict", "description"}:
        raise InvalidRequest(
            f"'{param}' must be an object with name, schema, strict and description",
            param=PARAM,
        )
    name = value.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(f"'{param}.name' must be 1-64 of a-z, A-Z, 0-9, _ and -", param=PARAM)
    if not isinstance(value.get("strict", False), bool):
        raise InvalidRequest(f"'{param}.strict' must be a boolean", param=PARAM)
    if not isinstance(value.get("description", ""), str):
        raise InvalidRequest(f"'{param}.description' must be a string", param=PARAM)
    schema = value.get("schema")
    if schema is None:
        return Constraint()
    return Constraint(schema=schema_text(schema, PARAM))
