"""One test per named attack on a real server, which must serve on after each.

Elsewhere: DNS rebinding (tests/e2e/test_security.py), a timing leak in the key check
(tests/api/test_security.py, constant-time comparison), a client leaving mid-stream
(tests/e2e/test_batching.py::test_disconnect_frees_the_sequence), an engine raising
mid-batch (tests/unit/test_engine.py), model files that are broken (test_faults.py).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve
from tests.e2e.test_batching import metric

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT_S = 6
PYTHON_INTERNALS = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
SECRET_PROMPT = "hearth-e2e-prompt-marker-7f3a"
HOSTILE_NAME = "evil\nINFO hearth.requests: forged\x1b[31m\u2028"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, log): the default model, and the same file with a hostile chat template;
    debug logging, and a short request timeout."""
    folder = tmp_path_factory.mktemp("attacks")
    path = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
    models = folder / "models.toml"
    models.write_text(
        f'default = "qwen"\n'
        f'[models.qwen]\naliases = ["default"]\npath = "{path}"\n'
        f"context_length = 4096\nmax_sequences = 4\n"
        f'[models.injected]\npath = "{path}"\ncontext_length = 1024\nmax_sequences = 1\n'
        f"chat_template = {PYTHON_INTERNALS!r}\n"
    )
    log = folder / "server.log"
    env = {"HEARTH_LOG_LEVEL": "debug", "HEARTH_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S)}
    with serve(log, ("qwen", "injected"), models, env, wait_for=("qwen",)) as base:
        yield base, log


def chat(base: str, **fields: Any) -> httpx.Response:
    body = {"model": "default", "messages": [{"role": "user", "content": "Say hi."}]}
    return httpx.post(f"{base}/v1/chat/completions", json={**body, **fields}, timeout=60)


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def assert_serves(base: str) -> None:
    resp = chat(base, max_tokens=2, temperature=0)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] <= 2


def test_template_injection_from_model_metadata(server: tuple[str, Path]) -> None:
    """A chat template reaching for Python internals: the sandbox refuses it per request."""
    base, _ = server
    error = assert_error(chat(base, model="injected", max_tokens=2), 400)
    assert "unsafe" in error["message"] or "template" in error["message"]
    assert_serves(base)


def test_a_request_cannot_bring_its_own_template(server: tuple[str, Path]) -> None:
    """No template from a request; its template variables are data, and cannot replace
    what the server renders (the messages, the tools, the generation prompt)."""
    base, _ = server
    assert assert_error(chat(base, chat_template=PYTHON_INTERNALS), 400)["param"] == "chat_template"
    for kwargs in ({"messages": []}, {"add_generation_prompt": False}, {"not a name": 1}):
        error = assert_error(chat(base, chat_template_kwargs=kwargs), 400)
        assert error["param"] == "chat_template_kwargs"
    harmless: Any = {"x": PYTHON_INTERNALS}  # a value is a string to the template
    assert chat(base, chat_template_kwargs=harmless, max_tokens=2).status_code == 200
    assert_serves(base)


def test_invalid_response_format_is_refused(server: tuple[str, Path]) -> None:
    base, _ = server
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
    assert assert_error(chat(base, response_format=bad), 400)["param"] is not None
    assert_error(chat(base, response_format={"type": "grammar", "grammar": "root ::= ("}), 400)
    assert_serves(base)


def test_huge_n_is_refused_fast(server: tuple[str, Path]) -> None:
    base, _ = server
    started = time.monotonic()
    assert assert_error(chat(base, n=10**9), 400)["param"] == "n"
    assert time.monotonic() - started < 5
    assert_serves(base)


@pytest.mark.parametrize("name", ["../x", "/dev/random", "org/repo", "../../etc/passwd", "~"])
def test_model_names_are_never_paths(server: tuple[str, Path], name: str) -> None:
    """Models resolve by name only (ModelsFile.resolve, tests/unit/test_config.py)."""
    base, _ = server
    assert_error(chat(base, model=name), 404, "model_not_found")
    resp = httpx.post(f"{base}/tokenize", json={"model": name, "content": "x"})
    assert_error(resp, 404, "model_not_found")


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_header_flood_is_refused(server: tuple[str, Path]) -> None:
    """h11 caps the request head at 16 KiB (server/cli/main.py): a 64 KiB header gets a 400."""
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Flood: {'a' * 65536}\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head.encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    assert httpx.get(f"{base}/health").status_code == 200
    assert_serves(base)


def test_a_declared_huge_body_is_refused_unread(server: tuple[str, Path]) -> None:
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"request_too_large" in answer


def test_a_streamed_chunked_body_is_cut_at_the_limit(server: tuple[str, Path]) -> None:
    """The 413 comes once 8 MiB have arrived, while the client is still sending."""
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b"(reset)"
    assert sent < 32 * 1024 * 1024, "the server read far past its limit"
    assert answer.startswith(b"HTTP/1.1 413") or answer == b"(reset)", answer[:100]
    assert_serves(base)


def test_content_length_with_chunked_is_refused_and_the_connection_closed(
    server: tuple[str, Path],
) -> None:
    """RFC 9112 section 6.3: a request framed both ways ends its connection, so the
    request pipelined behind it (what a proxy framing by Content-Length would read as
    the first one's body) is never served."""
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    body = b'{"model": "default", "prompt": "x", "max_tokens": 1}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    behind = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%s%s" % (len(chunked), chunked, behind)
        )
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"connection: close" in head.lower()
    error = json.loads(rest)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Transfer-Encoding" in error["message"]
    assert_serves(base)


def test_a_stalled_client_cannot_hold_a_sequence(
    server: tuple[str, Path], request: pytest.FixtureRequest
) -> None:
    """A stream nobody reads (a tiny receive buffer, never read) ends at the request
    timeout and its sequence is freed."""
    base, _ = server
    http = httpx.Client(base_url=base, timeout=30)
    request.addfinalizer(http.close)
    host, port = base.removeprefix("http://").split(":")
    body = (
        b'{"model": "default", "stream": true, "max_tokens": 3000, "ignore_eos": true, '
        b'"messages": [{"role": "user", "content": "Write a very long story."}]}'
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, int(port)))
    try:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        deadline = time.monotonic() + 20
        while metric(http, "hearth_requests_running", model="qwen") == 0:
            assert time.monotonic() < deadline, "the stream never started"
            time.sleep(0.1)
        deadline = time.monotonic() + REQUEST_TIMEOUT_S + 15
        while metric(http, "hearth_requests_running", model="qwen") > 0:
            assert time.monotonic() < deadline, "the stalled stream held its sequence"
            time.sleep(0.2)
    finally:
        sock.close()
    generated = metric(http, "hearth_generation_tokens_total", model="qwen")
    assert generated < 3000
    assert_serves(base)


def test_logs_escape_client_text_and_hold_no_prompt(server: tuple[str, Path]) -> None:
    base, log = server
    assert_error(chat(base, model=HOSTILE_NAME), 404, "model_not_found")
    resp = chat(base, messages=[{"role": "user", "content": SECRET_PROMPT}], max_tokens=2)
    assert resp.status_code == 200
    time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert SECRET_PROMPT not in text  # debug logging, still no prompt
    assert "\x1b" not in text and "\u2028" not in text
    assert not any(line.startswith("INFO hearth.requests: forged") for line in text.splitlines())
    assert resp.json()["id"].removeprefix("chatcmpl-") in text  # the request's own log line
