"""Access control: API keys, the Host allow-list, CORS, and the bind-address check.

Three pure ASGI middlewares, outermost first; none reads or buffers a body, so a
streamed response passes through untouched::

    HostGuard    every route: a Host header not on the allow-list → 403 (DNS rebinding)
    Cors         only with HEARTH_CORS_ORIGINS: answers an allowed origin's preflight
                 with 204, adds Access-Control-* to its responses; others get nothing
    ApiKeyAuth   only with keys: every route but /health and /health/ready needs
                 ``Authorization: Bearer <key>``, else 401

They answer a refusal themselves, with the OpenAI error shape: they sit outside the
app's exception handlers. docs/security.md has the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.dialects import error_response
from server.config import ConfigError
from server.errors import AuthenticationError, HearthError, HostNotAllowed
from server.settings import Settings

log = logging.getLogger("hearth.security")

OPEN_PATHS = frozenset({"/health", "/health/ready"})
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


class SecurityConfigError(ConfigError):
    """An API key file, or the bind address, is unsafe; ``hearth serve`` refuses to start."""


def middleware(settings: Settings) -> list[Middleware]:
    """The access-control stack for ``Starlette(middleware=...)``, outermost first."""
    stack = []
    hosts = allowed_hosts(settings)
    if hosts is None:
        log.warning("HEARTH_ALLOWED_HOSTS=*: any Host is answered, DNS rebinding is not stopped")
    else:
        stack.append(Middleware(HostGuard, allowed=hosts))
    if settings.cors_origins:
        stack.append(Middleware(Cors, origins=frozenset(settings.cors_origins)))
    keys = load_api_keys(settings)
    if keys:
        log.info("API keys required on every route but /health (%d configured)", len(keys))
        stack.append(Middleware(ApiKeyAuth, keys=keys))
    return stack


def check_bind(settings: Settings) -> str | None:
    """Refuse a non-loopback bind without API keys; a warning when that is forced."""
    if load_api_keys(settings) or is_loopback(settings.host):
        return None
    where = f"{settings.host or 'every address'}:{settings.port}"
    if settings.insecure_no_auth:
        return f"serving {where} without API keys: anyone who can reach it can use it"
    raise SecurityConfigError(
        f"refusing to serve {where} without an API key: anyone on the network could use it. "
        "Give keys (--api-key-file or HEARTH_API_KEY_FILE, HEARTH_API_KEYS), bind 127.0.0.1, "
        "or pass --insecure-no-auth (HEARTH_INSECURE_NO_AUTH=1) if you mean it"
    )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def load_api_keys(settings: Settings) -> tuple[str, ...]:
    """HEARTH_API_KEYS and the key file together, without duplicates."""
    keys = [key.strip() for key in settings.api_keys if key.strip()]
    if settings.api_key_file is not None:
        keys += read_key_file(settings.api_key_file)
    return tuple(dict.fromkeys(keys))


def read_key_file(path: Path) -> list[str]:
    """One key per line; blank lines and lines starting with ``#`` are skipped.

    The file must be readable by its owner only (0600 or 0400) and hold a key.
    """
    try:
        with path.open(encoding="utf-8") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityConfigError(f"API key file {path}: cannot read it: {exc}") from exc
    if mode & 0o077:
        raise SecurityConfigError(
            f"API key file {path} is open to group or others (mode {mode:04o}); "
            f"it must be 0600 or 0400: chmod 600 {path}"
        )
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise SecurityConfigError(f"API key file {path} holds no key")
    return keys


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """Host names (no port) the server answers for; None when ``*`` allows every one."""
    if "*" in settings.allowed_hosts:
        return None
    hosts = [*LOCAL_HOSTS, *settings.allowed_hosts]
    if settings.host not in ANY_ADDRESS:
        hosts.append(settings.host)
    return frozenset(host_name(host) for host in hosts)


def host_name(host: str) -> str:
    """A Host header or bind address without its port, lower case, IPv6 in brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    if host.count(":") > 1:  # a bare IPv6 address
        return f"[{host}]"
    return host.partition(":")[0]


async def _refuse(scope: Scope, receive: Receive, send: Send, error: HearthError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await error_response(error, scope["path"])(scope, receive, send)


class HostGuard:
    """Refuses a request whose Host header is not on the allow-list.

    A web page on attacker.example can make the victim's browser resolve
    attacker.example to 127.0.0.1 and then read the answers (DNS rebinding); the
    browser still sends ``Host: attacker.example``, which is what this checks.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if host_name(host) not in self.allowed:
                log.debug("refused a request for host %r", host[:100])
                error = HostNotAllowed(f"this server does not answer for host {host[:100]!r}")
                await _refuse(scope, receive, send, error)
                return
        await self.app(scope, receive, send)


class Cors:
    """CORS for the configured origins only: exact matches, or ``*`` (never with credentials).

    A request from any other origin gets no Access-Control-* header, so the browser
    keeps its answer from the page; its preflight goes on to the app and is refused.
    """

    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or not self._allows(origin):
            await self.app(scope, receive, send)
            return
        grant = self._grant(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(headers, grant)(scope, receive, send)
            return

        async def send_with_grant(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers.update(grant)
                if not self.any_origin:
                    response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_grant)

    def _allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def _grant(self, origin: str) -> dict[str, str]:
        if self.any_origin:
            return {"Access-Control-Allow-Origin": "*"}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}

    def _preflight(self, headers: Headers, grant: dict[str, str]) -> Response:
        # The asked-for headers are granted (Authorization, and the openai SDK's own).
        asked = headers.get("access-control-request-headers", "")
        answer = {
            **grant,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Max-Age": "600",
        }
        if asked:
            answer["Access-Control-Allow-Headers"] = asked
        if not self.any_origin:
            answer["Vary"] = "Origin"
        return Response(status_code=204, headers=answer)


class ApiKeyAuth:
    """Every request but the health checks needs ``Authorization: Bearer <key>`` or
    ``x-api-key: <key>`` (Anthropic's clients).

    The presented key is compared with every configured key with
    ``hmac.compare_digest``, over SHA-256 digests so the lengths match, and with no
    early exit: the time taken says nothing about which key, if any, matched.
    """

    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.digests = tuple(_digest(key.encode()) for key in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_PATHS
        if guarded and not self._authorized(scope):
            error = AuthenticationError("a valid API key is required: Authorization: Bearer KEY")
            await _refuse(scope, receive, send, error)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        bearer = token.strip() if scheme.lower() == b"bearer" else b""
        presented = _digest(bearer or headers.get(b"x-api-key", b"").strip())
        matched = False
        for digest in self.digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched and bool(bearer or headers.get(b"x-api-key"))


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()
