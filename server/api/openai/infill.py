"""``POST /infill``: fill in the middle in llama-server's shape, for editor plugins
(llama.vscode, llama.vim) that send it unchanged.

Request: ``input_prefix``, ``input_suffix``, ``input_extra`` (``[{"filename", "text"}]``,
context from other files, placed before the FIM prefix), ``prompt`` (text after the
middle token), ``n_predict`` or ``max_tokens`` (-1: up to the model's default), the
sampling fields of ``/v1/completions``, ``stop``, ``stream``, ``model`` (default: the
default model). Accepted and ignored, as documented in docs/ide.md: ``cache_prompt``
(prefix reuse is always on), ``t_max_prompt_ms``, ``t_max_predict_ms``, ``n_indent``,
``samplers``, ``response_fields`` (every field is always returned).

Response: ``{"content", "stop": true, "model", "stop_type", "tokens_predicted",
"tokens_evaluated", "tokens_cached", "truncated", "timings"}``; streamed, each piece is
``data: {"content": ..., "stop": false}`` and the last one carries ``stop: true`` and
the counts. Infill requests are interactive: they are admitted and prefilled before other requests.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.base import GENERATE
from server.api.body import hub_of, read_json
from server.api.openai import schemas
from server.api.openai.messages import MAX_PROMPT_CHARS
from server.api.openai.render import sse, sse_error
from server.api.relay import Relay, start
from server.engine.requests import (
    INTERACTIVE,
    Failed,
    Fim,
    Finished,
    FinishReason,
    GenerationRequest,
    TextDelta,
)
from server.errors import InternalError, InvalidRequest, UnsupportedParameter

MAX_EXTRA_CHUNKS = 256
_PASSED = {
    "model", "temperature", "top_k", "top_p", "min_p", "seed", "presence_penalty",
    "frequency_penalty", "stop", "stream", "ignore_eos", "max_tokens", "speculative",
}  # fmt: skip
_OWN = {"input_prefix", "input_suffix", "input_extra", "prompt", "n_predict"}
IGNORED = {
    "cache_prompt", "t_max_prompt_ms", "t_max_predict_ms", "n_indent", "samplers",
    "response_fields",
}  # fmt: skip


def parse_infill(body: Any, default_model: str) -> tuple[str, dict[str, Any], Fim]:
    """Split an infill body into the model name, an OpenAI completion body whose fields
    :func:`schemas.parse_completion` validates, and the FIM prompt."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    for name in body:
        if name not in _PASSED | _OWN | IGNORED:
            raise UnsupportedParameter(f"unrecognized request argument: '{name}'", param=name)
    completion = {k: v for k, v in body.items() if k in _PASSED and v is not None}
    completion["model"] = model = body.get("model") or default_model
    n_predict = body.get("n_predict")
    if n_predict is not None and n_predict != -1:
        completion["max_tokens"] = n_predict
    completion["prompt"] = prefix = _text(body, "input_prefix")
    suffix, middle = _text(body, "input_suffix"), _text(body, "prompt")
    fim = Fim(prefix, suffix, _extra(body.get("input_extra")), middle)
    return model, completion, fim


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string", param=name)
    return value


def _extra(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_EXTRA_CHUNKS:
        raise InvalidRequest(
            f"'input_extra' must be an array of at most {MAX_EXTRA_CHUNKS} chunks",
            param="input_extra",
        )
    chunks = []
    for i, chunk in enumerate(value):
        ok = isinstance(chunk, dict) and set(chunk) <= {"filename", "text"}
        filename = chunk.get("filename", "") if ok else None
        text = chunk.get("text", "") if ok else None
        if not isinstance(filename, str) or not isinstance(text, str):
            raise InvalidRequest(
                f"'input_extra[{i}]' must be an object with string 'filename' and 'text'",
                param="input_extra",
            )
        chunks.append((filename, text))
    if sum(len(f) + len(t) for f, t in chunks) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"'input_extra' exceeds {MAX_PROMPT_CHARS} characters", param="input_extra"
        )
    return tuple(chunks)


async def infill(request: Request) -> Response:
    body = await read_json(request)
    hub = hub_of(request)
    model, completion, fim = parse_infill(body, hub.models.default)
    engine, config = await hub.acquire(model, GENERATE)
    parsed = schemas.parse_completion(completion, config.sampling, model=config.name)
    gen = dataclasses.replace(parsed.generation, prompt=None, fim=fim, priority=INTERACTIVE)
    stream, deadline = await start(request, engine, gen)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        return relay.stream(_sse(relay, gen))
    clock, parts = _Clock(gen.arrival), []
    try:
        async for event in relay.events():
            if isinstance(event, TextDelta):
                clock.token()
                parts.append(event.text)
            elif isinstance(event, Finished):
                return JSONResponse(_final("".join(parts), gen, event, clock))
            elif isinstance(event, Failed):
                raise event.error
        raise InternalError("the request ended without a last event")
    finally:
        relay.close()


async def _sse(relay: Relay, gen: GenerationRequest) -> AsyncGenerator[bytes, None]:
    clock = _Clock(gen.arrival)
    async for event in relay.events():
        if isinstance(event, TextDelta):
            clock.token()
            yield sse({"index": 0, "content": event.text, "stop": False})
        elif isinstance(event, Finished):
            yield sse(_final("", gen, event, clock))
        elif isinstance(event, Failed):
            yield sse_error(event.error)


class _Clock:
    """When the first token came, for llama-server's ``timings``."""

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival
        self.first: float | None = None

    def token(self) -> None:
        if self.first is None:
            self.first = time.monotonic()


def _final(content: str, gen: GenerationRequest, event: Finished, clock: _Clock) -> dict[str, Any]:
    usage, now = event.usage, time.monotonic()
    first = clock.first or now
    prompt_n = usage.prompt_tokens - usage.cached_tokens
    prompt_ms, predicted_ms = (first - clock.arrival) * 1000, (now - first) * 1000
    return {
        "index": 0,
        "content": content,
        "stop": True,
        "model": gen.model,
        "stop_type": "limit" if event.reason is FinishReason.LENGTH else "eos",
        "tokens_predicted": usage.completion_tokens,
        "tokens_evaluated": usage.prompt_tokens,
        "tokens_cached": usage.cached_tokens,
        "truncated": False,
        "timings": {
            "prompt_n": prompt_n,
            "prompt_ms": round(prompt_ms, 3),
            "predicted_n": usage.completion_tokens,
            "predicted_ms": round(predicted_ms, 3),
        },
    }


ROUTES = [Route("/infill", infill, methods=["POST"])]
