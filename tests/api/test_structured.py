"""response_format through the HTTP layer: accepted, compiled by the backend, refused."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from server.engine.hub import ModelHub
from tests.api.test_api import assert_error, chat_body
from tests.api.test_fim import fake

CHAT = "/v1/chat/completions"
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_json_object_and_json_schema_reach_the_backend(client: TestClient, hub: ModelHub) -> None:
    r = client.post(CHAT, json=chat_body("x", response_format={"type": "json_object"}))
    assert r.status_code == 200, r.text
    r = client.post(CHAT, json=chat_body("x", response_format=json_schema(SCHEMA)))
    assert r.status_code == 200, r.text
    body = {"model": "alpha", "prompt": "x", "response_format": {"type": "json_object"}}
    assert client.post("/v1/completions", json=body).status_code == 200
    grammars = fake(hub).grammars
    assert len(grammars) == 3 and '"\\"n\\""' in grammars[1]


def test_text_format_is_plain(client: TestClient, hub: ModelHub) -> None:
    r = client.post(CHAT, json=chat_body("x", response_format={"type": "text"}))
    assert r.status_code == 200 and fake(hub).grammars == []


def test_hostile_schemas_get_400_and_the_server_still_answers(client: TestClient) -> None:
    recursive = {"$ref": "#/$defs/a", "$defs": {"a": {"type": "array", "items": {"$ref": "#"}}}}
    for schema in (recursive, {"$ref": "https://evil.example/x.json"}):
        r = client.post(CHAT, json=chat_body("x", response_format=json_schema(schema)))
        assert_error(r, 400, param="response_format")
    # Written by hand, as json.dumps gives up near 1,000 levels; so does the body parser,
    # with a 400 of its own, so 1,000 levels never reach the schema check.
    for depth, param in ((500, "response_format"), (1000, None)):
        deep = '{"type": "array", "items": ' * depth + '{"type": "string"}' + "}" * depth
        raw = (
            '{"model": "alpha", "messages": [{"role": "user", "content": "x"}], '
            '"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": '
            + deep
            + "}}}"
        )
        r = client.post(CHAT, content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 400, param=param)
    # A schema the converter cannot handle: refused on the engine thread, not a crash.
    r = client.post(CHAT, json=chat_body("x", response_format=json_schema({"anyOf": 5})))
    assert_error(r, 400, param="response_format")
    assert client.post(CHAT, json=chat_body("still here")).status_code == 200


def test_bad_response_format_shapes(client: TestClient) -> None:
    for value in ("json", {"type": "yaml"}, {"type": "json_schema", "json_schema": []}):
        r = client.post(CHAT, json=chat_body("x", response_format=value))
        assert_error(r, 400, param="response_format")
