"""Access control in-process over the fake backend: keys, Host allow-list, CORS."""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from server.api import security
from server.api.app import create_app
from server.engine.hub import ModelHub
from server.settings import Settings
from tests.api.conftest import BASE_URL
from tests.api.test_api import assert_error, chat_body, sse_events

CHAT = "/v1/chat/completions"
KEY = "sk-hearth-test-0123456789abcdef"
OTHER_KEY = "sk-hearth-test-second-key"
OPEN = {"/health", "/health/ready"}
APP_ORIGIN = "https://app.example"
EVIL_ORIGIN = "https://evil.example"

Start = Callable[..., TestClient]


@pytest.fixture
def start(hub: ModelHub) -> Iterator[Start]:
    """``start(**settings)``: the app over the fake hub with those settings, started."""
    with ExitStack() as stack:

        def run(**fields: Any) -> TestClient:
            app = create_app(hub, Settings(**fields))
            client = TestClient(app, base_url=BASE_URL, raise_server_exceptions=False)
            return stack.enter_context(client)

        yield run


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def every_route(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) for every route the app has, path parameters filled in."""
    app = client.app
    assert isinstance(app, Starlette)
    pairs = []
    for route in app.routes:
        assert isinstance(route, Route), f"walk {route!r} too"
        assert route.methods
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        pairs += [(method, path) for method in sorted(route.methods)]
    return pairs


def assert_unauthorized(resp: Any, method: str) -> None:
    assert resp.status_code == 401, (method, resp.request.url, resp.text)
    assert resp.headers["www-authenticate"] == "Bearer"
    if method == "HEAD":
        return
    if resp.request.url.path.startswith("/v1/messages"):  # Anthropic's dialect, its shape
        assert resp.json()["error"]["type"] == "authentication_error"
        return
    if resp.request.url.path.startswith("/api/"):  # Ollama's dialect: {"error": message}
        assert set(resp.json()) == {"error"} and isinstance(resp.json()["error"], str)
        return
    error = assert_error(resp, 401, code="invalid_api_key")
    assert error["type"] == "authentication_error"


def test_every_route_but_health_needs_the_key(start: Start) -> None:
    client = start(api_keys=(KEY, OTHER_KEY))
    routes = every_route(client)
    assert {path for _, path in routes} >= OPEN | {"/v1/chat/completions", "/metrics"}
    for method, path in routes:
        missing = client.request(method, path)
        wrong = client.request(method, path, headers=bearer(KEY + "x"))
        basic = client.request(method, path, headers={"Authorization": f"Basic {KEY}"})
        right = client.request(method, path, headers=bearer(OTHER_KEY))
        assert right.status_code not in (401, 403), (method, path, right.text)
        if path in OPEN:
            assert missing.status_code == wrong.status_code == right.status_code
        else:
            for resp in (missing, wrong, basic):
                assert_unauthorized(resp, method)
    assert client.get("/health").json() == {"status": "ok"}


def test_the_right_key_serves_a_request(start: Start) -> None:
    client = start(api_keys=(KEY,))
    resp = client.post(CHAT, json=chat_body("hi"), headers=bearer(KEY))
    assert resp.json()["choices"][0]["message"]["content"] == "hi"
    resp = client.post(CHAT, json=chat_body("hi"))
    assert_unauthorized(resp, "POST")
    assert KEY not in resp.text


def test_without_keys_nothing_is_asked(start: Start) -> None:
    client = start()
    assert client.get("/v1/models").status_code == 200


def test_every_key_is_compared_in_constant_time(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = ("sk-first", KEY, "sk-third-and-longer")
    client = start(api_keys=keys)
    for headers, status in [
        (bearer("sk-first"), 200),  # the first key matches: the other two are still compared
        (bearer("sk-third-and-longer"), 200),
        (bearer("sk-wrong"), 401),
        ({}, 401),
    ]:
        calls.clear()
        assert client.get("/v1/models", headers=headers).status_code == status
        assert len(calls) == len(keys)
        assert len({configured for _, configured in calls}) == len(keys)
        assert {len(a) for a, _ in calls} == {len(b) for _, b in calls} == {32}


@pytest.mark.parametrize("path", ["/health", "/v1/models"])
def test_a_host_not_on_the_list_is_refused(start: Start, path: str) -> None:
    client = start()
    resp = client.get(path, headers={"Host": "evil.example"})
    error = assert_error(resp, 403, code="host_not_allowed")
    assert error["type"] == "permission_error" and "evil.example" in error["message"]
    resp = client.get(path, headers={"Host": "localhost.evil.example:8080"})
    assert resp.status_code == 403


@pytest.mark.parametrize("host", ["localhost:8080", "localhost", "127.0.0.1:9", "[::1]:8080"])
def test_local_hosts_are_allowed(start: Start, host: str) -> None:
    assert start().get("/health", headers={"Host": host}).status_code == 200


def test_configured_and_bind_hosts_are_allowed(start: Start) -> None:
    client = start(host="192.168.1.5", allowed_hosts=("box.lan",), api_keys=(KEY,))
    for host in ("box.lan:8080", "BOX.LAN", "192.168.1.5:8080"):
        assert client.get("/v1/models", headers={"Host": host, **bearer(KEY)}).status_code == 200
    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 403


def test_a_star_allows_every_host(start: Start) -> None:
    assert start(allowed_hosts=("*",)).get("/health", headers={"Host": "evil.example"}).is_success


def test_cors_is_closed_by_default(start: Start) -> None:
    client = start()
    resp = client.get("/v1/models", headers={"Origin": EVIL_ORIGIN})
    assert resp.status_code == 200
    assert not any(h.startswith("access-control-") for h in resp.headers)
    resp = client.options(CHAT, headers=preflight(EVIL_ORIGIN))
    assert resp.status_code >= 400
    assert not any(h.startswith("access-control-") for h in resp.headers)


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-lang",
    }


def test_cors_for_a_configured_origin(start: Start) -> None:
    client = start(cors_origins=(APP_ORIGIN,), api_keys=(KEY,))
    resp = client.options(CHAT, headers=preflight(APP_ORIGIN))
    assert resp.status_code == 204  # a preflight carries no key
    assert resp.headers["access-control-allow-origin"] == APP_ORIGIN
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in resp.headers["access-control-allow-headers"]
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert resp.headers["vary"] == "Origin"

    resp = client.get("/v1/models", headers={"Origin": APP_ORIGIN, **bearer(KEY)})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == APP_ORIGIN
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in resp.headers["vary"]
    # The page can read a refusal too.
    resp = client.get("/v1/models", headers={"Origin": APP_ORIGIN})
    assert resp.status_code == 401
    assert resp.headers["access-control-allow-origin"] == APP_ORIGIN

    resp = client.get("/v1/models", headers={"Origin": EVIL_ORIGIN, **bearer(KEY)})
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers
    resp = client.options("/v1/models", headers=preflight(EVIL_ORIGIN))
    assert resp.status_code == 401 and "access-control-allow-origin" not in resp.headers


def test_cors_star_never_allows_credentials(start: Start) -> None:
    client = start(cors_origins=("*",))
    resp = client.options(CHAT, headers=preflight(EVIL_ORIGIN))
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in resp.headers
    resp = client.get("/v1/models", headers={"Origin": EVIL_ORIGIN, "Cookie": "session=1"})
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in resp.headers


def test_a_stream_passes_through_every_guard(start: Start) -> None:
    client = start(api_keys=(KEY,), cors_origins=(APP_ORIGIN,), allowed_hosts=("box.lan",))
    headers = {"Origin": APP_ORIGIN, "Host": "box.lan", **bearer(KEY)}
    resp = client.post(CHAT, json=chat_body("streamed", stream=True), headers=headers)
    assert resp.headers["access-control-allow-origin"] == APP_ORIGIN
    events = sse_events(resp.text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == "streamed"


def test_the_middleware_never_holds_back_a_body() -> None:
    """The first chunk of a stream reaches the client before the app writes the second."""
    first_sent = asyncio.Event()

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.wait_for(first_sent.wait(), timeout=5)
        await send({"type": "http.response.body", "body": b"two"})

    settings = Settings(api_keys=(KEY,), cors_origins=(APP_ORIGIN,))
    app = streaming
    for layer in reversed(security.middleware(settings)):
        app = wrap(layer, app)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body") == b"one":
            first_sent.set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http", "method": "GET", "path": "/v1/models", "query_string": b"",
        "headers": [
            (b"host", b"localhost:8080"), (b"origin", APP_ORIGIN.encode()),
            (b"authorization", f"Bearer {KEY}".encode()),
        ],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert [m.get("body") for m in sent] == [None, b"one", b"two"]
    assert (b"access-control-allow-origin", APP_ORIGIN.encode()) in sent[0]["headers"]


def wrap(layer: Middleware, app: Any) -> Any:
    cls, args, kwargs = layer
    return cls(app, *args, **kwargs)
