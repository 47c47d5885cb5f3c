"""``/v1/responses``: OpenAI's Responses API (Codex, the Agents SDK) over the same engine
as chat completions; errors in OpenAI's shape. See docs/responses.md."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.api.body import read_json
from server.api.loading import is_streamed, when_loaded
from server.api.relay import Relay, start, tool_format
from server.api.responses import render, schemas
from server.api.responses.store import ResponseStore, Stored
from server.config import ModelConfig
from server.engine.handle import ModelEngine
from server.engine.requests import Failed, Finished

KEEP_ALIVE_SECONDS = 10.0
NOT_OFFERED = "hearth-tools-not-offered"  # the hosted tools left out, comma-separated


def store_of(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.responses
    return store


async def create(request: Request) -> Response:
    body = await read_json(request)

    async def handle(engine: ModelEngine, config: ModelConfig) -> Response:
        return await _create(request, body, engine, config)

    return await when_loaded(
        request, schemas.model_name(body), is_streamed(body), handle,
        keep_alive=b": loading the model\n\n", error_event=render.error_event,
    )  # fmt: skip


async def _create(request: Request, body: Any, engine: ModelEngine, config: ModelConfig) -> (
    Response
):  # fmt: skip
    previous = schemas.previous_id(body)
    history = (
        store_of(request).get(previous, "previous_response_id").conversation if previous else ()
    )
    parsed = schemas.parse(body, config.sampling, model=config.name, history=history,
                           tool_format=tool_format(engine))  # fmt: skip
    gen = parsed.generation
    stream, deadline = await start(request, engine, gen)
    tools = [{"type": "function", "name": t.name, "description": t.description,
              "parameters": _json(t.parameters), "strict": False} for t in gen.tools]  # fmt: skip
    response = render.Response(config.name, parsed.echo, tools, gen.parallel_tool_calls)
    headers = {NOT_OFFERED: ",".join(parsed.not_offered)} if parsed.not_offered else {}
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    keep = _keeper(request, parsed, history)
    if parsed.stream:
        sse = relay.stream(_events(relay, response, keep))
        sse.headers.update(headers)
        return sse
    whole = render.whole(response, await relay.collect())
    keep(whole)
    return JSONResponse(whole, headers=headers)


def _keeper(request: Request, parsed: schemas.ParsedResponse, history: tuple[Any, ...]) -> Any:
    store = store_of(request)

    def keep(body: dict[str, Any]) -> None:
        if parsed.store and body["status"] in ("completed", "incomplete"):
            conversation = history + parsed.new_input + render.as_messages(body["output"])
            store.put(body["id"], Stored(body, conversation))

    return keep


async def _events(relay: Relay, response: render.Response, keep: Any) -> AsyncGenerator[
    bytes, None
]:  # fmt: skip
    output = render.Output(response)
    yield output.start()
    async for item in relay.events_with_beats(KEEP_ALIVE_SECONDS):
        if item is None:
            yield b": keep-alive\n\n"
        elif isinstance(item, Finished | Failed):
            out, body = output.end(item)
            keep(body)  # a failed response is not kept
            yield out
        elif out := output.feed(item):
            yield out


async def retrieve(request: Request) -> Response:
    return JSONResponse(store_of(request).get(request.path_params["response_id"]).body)


async def delete(request: Request) -> Response:
    response_id = request.path_params["response_id"]
    store_of(request).delete(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def _json(text: str) -> Any:
    import json

    return json.loads(text)


ROUTES = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
]
