"""Structured output on the real model: JSON answers that parse and match the schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "languages": {"type": "array", "items": {"type": "string"}},
        "role": {"enum": ["backend", "frontend", "ops"]},
    },
    "required": ["name", "age", "languages", "role"],
    "additionalProperties": False,
}


# Every value of this schema is short, so an answer that goes on is one that did not end.
ROLE = {
    "type": "object",
    "properties": {"role": {"enum": ["backend", "frontend", "ops"]}, "level": {"enum": [1, 2, 3]}},
    "required": ["role", "level"],
    "additionalProperties": False,
}


def valid(value: Any, schema: dict[str, Any]) -> bool:
    """The subset of JSON Schema used here: type, properties, required, items, enum."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(k in value for k in schema.get("required", []))
            and (schema.get("additionalProperties", True) or set(value) <= set(props))
            and all(valid(v, props[k]) for k, v in value.items() if k in props)
        )
    if kind == "array":
        return isinstance(value, list) and all(valid(v, schema["items"]) for v in value)
    checks = {"string": str, "integer": int, "number": int | float, "boolean": bool}
    return isinstance(value, checks[kind]) and not (kind != "boolean" and value is True)


def test_json_schema_answer_parses_and_validates(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Invent a software engineer. Answer in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
        temperature=0,
        max_tokens=200,
    )
    text = r.choices[0].message.content or ""
    assert r.choices[0].finish_reason == "stop", text
    assert valid(json.loads(text), PERSON), text


def test_json_object_answer_parses(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="default",
        prompt="A JSON object describing the planet Mars:\n",
        extra_body={"response_format": {"type": "json_object"}},
        temperature=0,
        max_tokens=120,
    )
    text = r.choices[0].text
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict), text
    assert text.lstrip().startswith("{")


def nested(depth: int) -> str:
    return '{"type": "array", "items": ' * depth + '{"type": "string"}' + "}" * depth


RECURSIVE = (
    '{"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}'
)


@pytest.mark.parametrize(
    "schema, param",
    [(nested(1000), None), (nested(100), "response_format"), (RECURSIVE, "response_format")],
)
def test_hostile_schemas_get_400_and_the_server_still_answers(
    http: httpx.Client, schema: str, param: str | None
) -> None:
    raw = (
        '{"model": "default", "messages": [{"role": "user", "content": "hi"}], '
        '"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
        + schema
        + "}}}"
    )
    headers = {"Content-Type": "application/json"}
    r = http.post("/v1/chat/completions", content=raw, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert http.post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_complete_json_answer_ends_even_with_ignore_eos(
    http: httpx.Client, temperature: float
) -> None:
    """Once the JSON value is complete the grammar allows only an end; with ignore_eos
    banning it, llama.cpp used to be handed a token the grammar refused and abort the
    whole server. The answer now ends there, and the server keeps serving."""
    body = {
        "model": "default", "temperature": temperature, "seed": 3, "max_tokens": 200,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "Invent a software engineer. Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": ROLE}},
    }  # fmt: skip
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "stop"  # a value of this schema is a few tokens
    assert valid(json.loads(choice["message"]["content"]), ROLE)
    assert http.get("/health/ready").status_code == 200
