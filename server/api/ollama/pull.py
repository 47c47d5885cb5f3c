"""``POST /api/pull``: fetch a model that models.toml names, from its pinned ``source``
and checked against its ``sha256`` (:mod:`server.cli.pull`), and nothing else: any
other name is Ollama's 404.

Streamed (Ollama's default), the progress comes as ``{"status", "digest", "total",
"completed"}`` lines and ends with ``{"status": "success"}`` or ``{"error": ...}``;
with ``stream: false`` the answer is that last line alone. A model pulled while the
server runs is served once the server loads it (``hearth serve --model NAME``).
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from server.api import fields as f
from server.api.body import hub_of, read_json
from server.api.ollama import render
from server.api.ollama.catalogue import find, size_of
from server.cli import pull as fetch
from server.config import ModelConfig
from server.errors import HearthError, InvalidRequest, ModelNotFound, UnsupportedParameter

FIELDS = {"model", "name", "stream", "insecure"}  # insecure: sources are pinned and hashed
_PROGRESS = re.compile(r"([\d.]+)\s*/\s*([\d.]+)\s*MB")

Send = Callable[[dict[str, Any]], None]


async def pull(request: Request) -> Response:
    body = f.as_object(await read_json(request))
    for key in body:
        if key not in FIELDS:
            raise UnsupportedParameter(f"unknown field {key!r}", param=key)
    name = body.get("model") or body.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("model is required", param="model")
    try:
        config = find(hub_of(request).models, name)
    except ModelNotFound:
        raise ModelNotFound(
            f'pull model manifest: "{name}" is not in models.toml; this server pulls only '
            "the models it names",
            param="model",
        ) from None
    lock = _lock(request, config.name)
    f.boolean(body, "insecure")
    if body.get("stream") is None or f.boolean(body, "stream"):
        return StreamingResponse(_lines(config, lock), media_type=render.MEDIA_TYPE)
    try:
        await asyncio.to_thread(_fetch, config, lock, lambda status: None)
    except fetch.PullError as exc:
        raise HearthError(str(exc)) from exc
    return JSONResponse({"status": "success"})


async def _lines(config: ModelConfig, lock: threading.Lock) -> AsyncGenerator[bytes, None]:
    loop, queue = asyncio.get_running_loop(), asyncio.Queue[dict[str, Any]]()

    def send(status: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, status)

    task = asyncio.ensure_future(asyncio.to_thread(_fetch, config, lock, send))
    while not task.done() or not queue.empty():
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield render.line(getter.result())
        else:
            getter.cancel()
    try:
        task.result()
    except fetch.PullError as exc:
        yield render.error_line(HearthError(str(exc)))
    else:
        yield render.line({"status": "success"})


def _fetch(config: ModelConfig, lock: threading.Lock, send: Send) -> None:
    """On a worker thread: one pull of a file at a time; a second waits, then finds it."""
    digest = config.sha256 or ""
    with lock:
        if not fetch.is_present(config.path, config.sha256):
            if config.source is None:
                raise fetch.PullError(f"model {config.name!r} has no source in models.toml")
            try:
                source = fetch.parse_source(config.source)
            except ValueError as exc:
                raise fetch.PullError(str(exc)) from exc
            fetch.pull(config.path, source, config.sha256, out=_Progress(send, digest))
    size = size_of(config.path)
    send(_status(digest, size, size))
    if digest:
        send({"status": "verifying sha256 digest"})


def _status(digest: str, total: int, completed: int) -> dict[str, Any]:
    head = {"status": f"pulling {digest[:12]}"} if digest else {"status": "pulling"}
    return {**head, "digest": f"sha256:{digest}" if digest else "", "total": total,
            "completed": completed}  # fmt: skip


class _Progress(io.StringIO):
    """The pull's text output (``fetching ...`` lines, ``\\r  12.0 / 490.0 MB 2%``
    progress) as Ollama's status lines."""

    def __init__(self, send: Send, digest: str) -> None:
        self._send = send
        self._digest = digest

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", text):
            piece = piece.strip()
            if match := _PROGRESS.search(piece):
                done, total = (int(float(n) * 1_000_000) for n in match.groups())
                self._send(_status(self._digest, total, done))
            elif piece:
                self._send({"status": piece})
        return len(text)


def _lock(request: Request, name: str) -> threading.Lock:
    state = request.app.state
    locks: dict[str, threading.Lock] | None = getattr(state, "pull_locks", None)
    if locks is None:
        locks = state.pull_locks = {}
    return locks.setdefault(name, threading.Lock())


ROUTES = [Route("/api/pull", pull, methods=["POST"])]
