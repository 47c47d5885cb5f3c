"""What every route does with a request first: read its JSON body within the size
limit, and find the model hub."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from server.engine.hub import ModelHub
from server.errors import InvalidRequest

MAX_BODY_BYTES = 8 * 1024 * 1024


class RequestTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"

    def headers(self) -> dict[str, str]:
        # Closing the connection stops the server reading (and discarding) the rest.
        return {**super().headers(), "Connection": "close"}


async def read_json(request: Request) -> Any:
    """The body as JSON; 413 for a declared or streamed body over MAX_BODY_BYTES,
    before more than that is read."""
    declared = request.headers.get("content-length", "")
    if len(declared) > 18 or (declared.isdigit() and int(declared) > MAX_BODY_BYTES):
        raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of 4,300+ digits
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[..." deeper than the parser's stack
        raise InvalidRequest("the request body is nested too deeply") from exc


def hub_of(request: Request) -> ModelHub:
    hub: ModelHub = request.app.state.hub
    return hub
