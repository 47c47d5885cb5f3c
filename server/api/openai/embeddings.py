"""``POST /v1/embeddings`` in OpenAI's shape, for a model with ``task = "embed"``.

``input`` is a string, an array of strings, an array of token ids (one input), or an
array of such arrays; ``encoding_format`` ``float`` (default) or ``base64``
(little-endian float32); ``dimensions`` for a matryoshka model only; ``user`` accepted.
An input over the model's limit is refused (OpenAI has no field to ask for truncation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from backends.base import EMBED
from server.api import embedding as e
from server.api import fields as f
from server.api.openai.schemas import MAX_TOKEN_ID, model_name
from server.config import ModelConfig
from server.engine.requests import Embedded, EmbeddingRequest
from server.errors import InvalidRequest

FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
FORMATS = ("float", "base64")


@dataclass(frozen=True, slots=True)
class ParsedEmbeddings:
    embedding: EmbeddingRequest
    base64: bool


def parse(body: Any, config: ModelConfig) -> ParsedEmbeddings:
    fields = e.known_fields(body, FIELDS)
    encoding = fields.get("encoding_format", "float")
    if encoding not in FORMATS:
        raise InvalidRequest("'encoding_format' must be \"float\" or \"base64\"",
                             param="encoding_format")  # fmt: skip
    if not isinstance(fields.get("user", ""), str):
        raise InvalidRequest("'user' must be a string", param="user")
    request = EmbeddingRequest(
        request_id=f.request_id(),
        model=config.name,
        inputs=parse_input(fields.get("input")),
        arrival=time.monotonic(),
        dimensions=e.dimensions(fields, config),
    )
    return ParsedEmbeddings(request, encoding == "base64")


def parse_input(value: Any) -> tuple[str | tuple[int, ...], ...]:
    """Texts, or token arrays taken as they are (an array of ids is one input)."""
    if isinstance(value, list) and value and all(_is_token(t) for t in value):
        return (tuple(value),)
    if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
        e.check_count(len(value), "input")
        for i, tokens in enumerate(value):
            if not tokens or not all(_is_token(t) for t in tokens):
                raise InvalidRequest(f"'input[{i}]' must be a non-empty array of token ids",
                                     param=f"input[{i}]")  # fmt: skip
        return tuple(tuple(tokens) for tokens in value)
    if value is None:
        raise InvalidRequest("'input' is required", param="input")
    return e.texts(value, "input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def render(parsed: ParsedEmbeddings, result: Embedded) -> dict[str, Any]:
    encode = e.base64_floats if parsed.base64 else e.floats
    data = [{"object": "embedding", "index": i, "embedding": encode(vector)}
            for i, vector in enumerate(result.vectors)]  # fmt: skip
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"object": "list", "data": data, "model": parsed.embedding.model, "usage": usage}


embeddings = e.endpoint(EMBED, model_name, parse, render)


ROUTES = [Route("/v1/embeddings", embeddings, methods=["POST"])]
