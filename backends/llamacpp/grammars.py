"""JSON constraints turned into llama.cpp GBNF grammars, with limits and a cache.

The conversion is llama-cpp-python's (``json_schema_to_gbnf``, ``JSON_GBNF``); this
module bounds what reaches it. A schema from a client is untrusted: its nesting depth
and size are capped and ``$ref`` cycles are refused before conversion, and any failure
of the converter is a :class:`GrammarError`, never a crash.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from backends.base import Constraint, GrammarError

MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_BYTES = 64 * 1024
CACHE_SIZE = 64
# Where a constraint is wrapped in literal text, the JSON's own root is renamed.
_INNER_ROOT = "hearth-json"


def check_schema(schema: Any) -> str:
    """Check a JSON schema's depth, size and ``$ref`` cycles; return its JSON text."""
    _check_depth(schema)
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise GrammarError(f"the JSON schema exceeds {MAX_SCHEMA_BYTES} bytes")
    if not isinstance(schema, dict):
        raise GrammarError("the JSON schema must be an object")
    _check_refs(schema)
    return text


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)


def _refs(node: Any) -> list[str]:
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _target(schema: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        raise GrammarError(f"only local $ref (#/...) is supported, not {ref[:80]!r}")
    node: Any = schema
    for part in [p for p in ref[1:].split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            raise GrammarError(f"$ref {ref[:80]!r} does not resolve")
        node = node[part]
    return node


def _check_refs(schema: dict[str, Any]) -> None:
    """Refuse a ``$ref`` that leads back to itself (a recursive schema)."""
    edges = {ref: set(_refs(_target(schema, ref))) for ref in set(_refs(schema))}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in edges:
        stack = [(start, iter(edges[start]))]
        if state.get(start):
            continue
        state[start] = 1
        while stack:
            ref, nexts = stack[-1]
            nxt = next(nexts, None)
            if nxt is None:
                state[ref] = 2
                stack.pop()
            elif state.get(nxt) == 1 or nxt in ("#", "#/"):
                raise GrammarError(f"the JSON schema is recursive ($ref {nxt[:80]!r})")
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(edges.get(nxt, ()))))


@functools.lru_cache(maxsize=CACHE_SIZE)
def to_gbnf(constraint: Constraint) -> str:
    """The GBNF grammar (root rule ``root``) for a constraint; cached, bounded LRU."""
    from llama_cpp import llama_grammar

    if constraint.schema is None:
        grammar = llama_grammar.JSON_GBNF
    else:
        check_schema(json.loads(constraint.schema))
        try:
            grammar = llama_grammar.json_schema_to_gbnf(constraint.schema, ["name", "arguments"])
        except RecursionError as exc:
            raise GrammarError("the JSON schema is too complex") from exc
        except Exception as exc:  # the converter asserts and raises on what it cannot do
            raise GrammarError(f"the JSON schema cannot be turned into a grammar: {exc}") from exc
    if not (constraint.before or constraint.after):
        return str(grammar)
    inner = re.sub(r"^root\s*::=", f"{_INNER_ROOT} ::=", str(grammar), count=1, flags=re.M)
    wrapped = f"root ::= {_literal(constraint.before)} {_INNER_ROOT} {_literal(constraint.after)}"
    return f"{wrapped}\n{inner}"


def _literal(text: str) -> str:
    return json.dumps(text) if text else '""'
