"""JSON constraints to GBNF: limits, cycles, wrapping, and llama.cpp's own parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backends.base import Constraint, GrammarError
from backends.llamacpp.grammars import MAX_SCHEMA_BYTES, check_schema, to_gbnf
from server.api.openai.formats import parse_response_format
from server.errors import InvalidRequest

POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "y": {"$ref": "#/$defs/num"}},
    "required": ["x", "y"],
    "$defs": {"num": {"type": "number"}},
}
MODEL = Path.home() / ".cache/hearth/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_a_schema_becomes_a_grammar() -> None:
    grammar = to_gbnf(Constraint(schema=check_schema(POINT)))
    assert grammar.count("root ::=") == 1 and '"\\"x\\""' in grammar


def test_any_json_object() -> None:
    assert "root" in to_gbnf(Constraint())


def test_wrapped_in_literal_text() -> None:
    grammar = to_gbnf(Constraint(schema=json.dumps(POINT), before="<a>\n", after="\n</a>"))
    assert grammar.startswith('root ::= "<a>\\n" hearth-json "\\n</a>"')
    assert grammar.count("root ::=") == 1 and "hearth-json ::=" in grammar


@pytest.mark.parametrize(
    "schema, message",
    [
        (nested(1000), "deeper"),
        ({"enum": ["x" * MAX_SCHEMA_BYTES]}, "bytes"),
        ({"$ref": "#"}, "recursive"),
        ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
         "recursive"),
        ({"type": "object", "properties": {"n": {"$ref": "#/$defs/node"}},
          "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}},
         "recursive"),
        ({"$ref": "https://example.com/schema.json"}, "local"),
        ({"$ref": "#/nowhere"}, "resolve"),
        ([1], "object"),
    ],
)  # fmt: skip
def test_hostile_schemas_are_refused(schema: Any, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        check_schema(schema)


def test_converter_failures_are_grammar_errors() -> None:
    with pytest.raises(GrammarError):
        to_gbnf(Constraint(schema=json.dumps({"anyOf": 5})))


def test_compiled_grammars_are_cached() -> None:
    constraint = Constraint(schema=json.dumps({"type": "integer"}))
    first = to_gbnf(constraint)
    assert to_gbnf(Constraint(schema=json.dumps({"type": "integer"}))) is first
    assert to_gbnf.cache_info().maxsize == 64


@pytest.mark.parametrize(
    "value",
    [
        "json",
        {"type": "xml"},
        {"type": "json_object", "extra": 1},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": {}}},
        {"type": "json_schema", "json_schema": {"name": "bad name", "schema": {}}},
        {"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": nested(40)}},
    ],
)
def test_bad_response_formats(value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_response_format(value)
    assert info.value.param == "response_format"


def test_response_formats() -> None:
    assert parse_response_format({"type": "text"}) is None
    assert parse_response_format({"type": "json_object"}) == Constraint()
    value = {"type": "json_schema", "json_schema": {"name": "p", "schema": POINT, "strict": True}}
    constraint = parse_response_format(value)
    assert constraint is not None and json.loads(constraint.schema or "") == POINT


@pytest.mark.skipif(not MODEL.exists(), reason="the default model is not pulled")
def test_llama_cpp_parser_rejection_is_none_not_a_crash() -> None:
    import llama_cpp as ll

    from backends.llamacpp import native

    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(MODEL).encode(), params)
    try:
        vocab = ll.llama_model_get_vocab(model)
        assert native.grammar_sampler(vocab, "root ::= (") is None
        assert native.grammar_sampler(vocab, "root ::= left\nleft ::= left") is None
        good = native.grammar_sampler(vocab, to_gbnf(Constraint()))
        assert good is not None
        ll.llama_sampler_free(good)
    finally:
        ll.llama_model_free(model)
