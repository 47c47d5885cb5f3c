"""Which API dialect a path speaks, so that an error raised before a route's own code
runs (a bad key, a refused head, an unknown path, malformed JSON) still reaches the
client in that dialect's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from server.api.anthropic.render import error_body as anthropic_error
from server.api.ollama.render import error_body as ollama_error
from server.errors import HearthError

# Path prefix -> error body; everything else speaks OpenAI's shape.
_SHAPES: tuple[tuple[str, Callable[[HearthError], dict[str, Any]]], ...] = (
    ("/v1/messages", anthropic_error),
    ("/api", ollama_error),
)


def error_body(error: HearthError, path: str) -> dict[str, Any]:
    for prefix, shape in _SHAPES:
        if path == prefix or path.startswith(prefix + "/"):
            return shape(error)
    return error.body()


def error_response(error: HearthError, path: str) -> Response:
    body = error_body(error, path)
    return JSONResponse(body, status_code=error.status, headers=error.headers())
