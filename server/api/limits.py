"""The size of a request's head: the path, query and headers together.

uvicorn's h11 bounds the memory a head can take (``h11_max_incomplete_event_size`` in
server/cli/main.py) but parses a big head that arrives whole; this refuses any head over
MAX_HEAD_BYTES with 431 before a route sees it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import InvalidRequest

MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(InvalidRequest):
    status = 431
    default_code = "request_header_fields_too_large"


class HeadLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            size += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
            if size > MAX_HEAD_BYTES:
                error = HeadTooLarge(f"the request's headers exceed {MAX_HEAD_BYTES} bytes")
                await JSONResponse(error.body(), status_code=error.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
