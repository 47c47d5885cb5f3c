"""What the embedding and rerank routes of every dialect share: the limit on inputs per
request, texts and ``dimensions`` parsed, a vector's wire forms, and a route answered
whole (the model for the task, loaded on demand, the request through its engine)."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.api import fields as f
from server.api.body import hub_of, read_json
from server.api.relay import embedded
from server.config import ModelConfig
from server.engine.requests import Embedded, EmbeddingRequest
from server.errors import InvalidRequest, UnsupportedParameter

MAX_INPUTS = 2048  # inputs (or documents) per request, as OpenAI allows
P = TypeVar("P", bound="Parsed")


class Parsed(Protocol):
    @property
    def embedding(self) -> EmbeddingRequest: ...


def endpoint(
    task: str,
    model_name: Callable[[Any], str],
    parse: Callable[[Any, ModelConfig], P],
    render: Callable[[P, Embedded], dict[str, Any]],
) -> Callable[[Request], Awaitable[Response]]:
    """A route answered whole: the body parsed for its model (one for ``task``, else
    refused before it loads), the model loaded if needed, the request embedded, the
    result rendered as JSON."""

    async def handle(request: Request) -> Response:
        body = await read_json(request)
        hub = hub_of(request)
        config = hub.model_for(model_name(body), task)
        parsed = parse(body, config)
        engine, _ = await hub.acquire(config.name, task)
        return JSONResponse(render(parsed, await embedded(request, engine, parsed.embedding)))

    return handle


def known_fields(body: Any, allowed: set[str]) -> dict[str, Any]:
    """The body as an object whose every field is in ``allowed`` (else a 400 naming it)."""
    fields = f.as_object(body)
    for name in fields:
        if name not in allowed:
            raise UnsupportedParameter(f"unknown field {name!r}", param=name)
    return fields


def texts(value: Any, param: str) -> tuple[str, ...]:
    """A string or a non-empty array of strings, none empty, at most MAX_INPUTS."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise InvalidRequest(f"'{param}' must be a string or a non-empty array of strings",
                             param=param)  # fmt: skip
    check_count(len(items), param)
    for i, text in enumerate(items):
        if not text:
            where = param if isinstance(value, str) else f"{param}[{i}]"
            raise InvalidRequest(f"'{where}' is empty", param=where)
    return tuple(items)


def check_count(n: int, param: str) -> None:
    if n > MAX_INPUTS:
        raise InvalidRequest(f"'{param}' holds {n} inputs; at most {MAX_INPUTS} per request",
                             param=param)  # fmt: skip


def dimensions(fields: Mapping[str, Any], config: ModelConfig) -> int | None:
    """``dimensions``: honoured only for a model trained so that a vector's first
    dimensions embed alone (models.toml ``matryoshka = true``)."""
    value = fields.get("dimensions")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    if not config.matryoshka:
        raise UnsupportedParameter(
            f"dimensions: model {config.name!r} was not trained for shortened embeddings "
            "(models.toml matryoshka = true marks one that was); leave dimensions out",
            param="dimensions",
        )
    return value


def floats(vector: array[float]) -> list[float]:
    return vector.tolist()


def base64_floats(vector: array[float]) -> str:
    """Little-endian float32, as OpenAI's ``encoding_format: "base64"``."""
    if sys.byteorder == "big":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")
