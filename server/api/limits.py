"""What a request's head may be: its size, and one way of framing its body.

uvicorn's h11 bounds the memory a head can take (``h11_max_incomplete_event_size`` in
server/cli/main.py) but parses a big head that arrives whole; :class:`HeadCheck` refuses
any head over MAX_HEAD_BYTES with 431 before a route sees it.

h11 frames a body that carries both ``Content-Length`` and ``Transfer-Encoding`` by the
latter, and keeps the connection open. A proxy in front that frames by
``Content-Length`` would then read a second request, pipelined behind the first, as the
first one's body, and hearth would serve it: request smuggling. RFC 9112, section 6.3,
says the server must close the connection after such a request; hearth refuses it with
400 and closes (``Connection: close``, on which h11 and uvicorn close the socket).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.dialects import error_response
from server.errors import HearthError, InvalidRequest

MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(InvalidRequest):
    status = 431
    default_code = "request_header_fields_too_large"


class AmbiguousFraming(InvalidRequest):
    default_code = "ambiguous_framing"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Connection": "close"}


class HeadCheck:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = head_error(scope) if scope["type"] == "http" else None
        if error is not None:
            await error_response(error, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)


def head_error(scope: Scope) -> HearthError | None:
    """Why this request's head is refused, if it is."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    size += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
    if size > MAX_HEAD_BYTES:
        return HeadTooLarge(f"the request's headers exceed {MAX_HEAD_BYTES} bytes")
    names = {name.lower() for name, _ in scope["headers"]}
    if b"content-length" in names and b"transfer-encoding" in names:
        return AmbiguousFraming(
            "a request may not carry both Content-Length and Transfer-Encoding "
            "(RFC 9112, section 6.3)"
        )
    return None
