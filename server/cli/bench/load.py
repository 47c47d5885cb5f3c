"""The load side of `hearth bench`: synthetic prompts, streamed requests, SSE timing.

For each concurrency level it sends streamed requests with exactly that many in
flight and stamps every line of every stream; `server.cli.bench.stats` turns those
into numbers. Only plain OpenAI request fields are sent, so hearth, llama.cpp's
llama-server and llama-cpp-python's server are measured alike; a config's
``extra_body`` adds server-specific fields.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.cli.bench.stats import LevelSummary, RequestResult, summarize_level

_WORDS = (
    "apple river stone cloud paper garden window silver market forest engine harbor "
    "candle mirror ladder pocket thunder violet basket meadow copper lantern saddle "
    "timber velvet anchor bridge castle desert falcon glacier hammer island jungle "
    "kettle lemon marble needle orchard pepper quartz ribbon shadow tunnel umbrella "
    "valley walnut yellow zebra"
)
_VOCAB = tuple(_WORDS.split())
_WORDS_PER_LINE = 10
#: Roughly what one numbered line of ten common words costs in a BPE tokenizer.
_TOKENS_PER_LINE = 14
_INSTRUCTION = "Continue this numbered list with many more lines of the same kind."


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What every request of a run shares."""

    model: str
    endpoint: str = "chat"
    prompt_tokens: int = 256
    max_tokens: int = 128
    shared_prefix: bool = False
    #: Varies the prompts from run to run (see `build_prompt`).
    seed: int = 0
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What one SSE line of a streamed completion carries."""

    text: str = ""
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    done: bool = False
    error: str | None = None


def build_prompt(index: int, approx_tokens: int, shared_prefix: bool = False, seed: int = 0) -> str:
    """A synthetic prompt of about ``approx_tokens`` tokens.

    Request ``index`` gets its own words and a first line naming it, so no two
    prompts share a cacheable prefix; with ``shared_prefix`` the word lines are
    common to all requests and only the last line differs. A new ``seed`` per run
    keeps a server's prompt cache from serving a later run what an earlier one sent.
    """
    rng = random.Random(f"{seed}:{'shared' if shared_prefix else index}")
    lines = [
        f"{n}. " + " ".join(rng.choice(_VOCAB) for _ in range(_WORDS_PER_LINE))
        for n in range(1, max(1, approx_tokens // _TOKENS_PER_LINE) + 1)
    ]
    tag = f"Request {seed}-{index}."
    parts = [*lines, tag] if shared_prefix else [tag, *lines]
    return "\n".join([*parts, _INSTRUCTION])


def request_body(config: BenchConfig, index: int) -> dict[str, Any]:
    """The JSON body of request ``index``: streamed, greedy, usage requested."""
    prompt = build_prompt(index, config.prompt_tokens, config.shared_prefix, config.seed)
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body | config.extra_body


def parse_sse_line(line: str) -> StreamEvent | None:
    """Parse one line of an OpenAI stream; None for blank lines, comments and other fields."""
    field_name, sep, value = line.partition(":")
    if not sep or field_name not in ("data", "error"):
        return None
    value = value.removeprefix(" ")
    if field_name == "error":
        return StreamEvent(error=value or "error event")
    if value.strip() == "[DONE]":
        return StreamEvent(done=True)
    try:
        chunk = json.loads(value)
    except json.JSONDecodeError:
        return StreamEvent(error=f"bad JSON in stream: {value[:200]}")
    if not isinstance(chunk, dict):
        return StreamEvent(error=f"unexpected chunk: {value[:200]}")
    return _chunk_event(chunk)


def _chunk_event(chunk: dict[str, Any]) -> StreamEvent:
    if err := chunk.get("error"):
        return StreamEvent(error=str(err.get("message", err) if isinstance(err, dict) else err))
    texts: list[object] = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        # Reasoning tokens are generated tokens too: a thinking model's user waits on them.
        texts += [delta.get("content"), delta.get("reasoning_content"), choice.get("text")]
    usage = chunk.get("usage") or {}
    return StreamEvent(
        text="".join(t for t in texts if isinstance(t, str)),
        completion_tokens=usage.get("completion_tokens"),
        prompt_tokens=usage.get("prompt_tokens"),
    )


def tally_stream(timed_lines: Iterable[tuple[float, str]], total_s: float) -> RequestResult:
    """Turn the lines of one stream, each stamped with seconds since the request was sent,
    into its result. Tokens come from the usage chunk, else one per content chunk."""
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage: StreamEvent | None = None
    for at, line in timed_lines:
        event = parse_sse_line(line)
        if event is None:
            continue
        if event.error is not None:
            return RequestResult(chunks, total_s, first, last, error=event.error)
        if event.text:
            chunks += 1
            first = at if first is None else first
            last = at
        if event.completion_tokens is not None:
            usage = event
    tokens = chunks if usage is None or usage.completion_tokens is None else usage.completion_tokens
    prompt = None if usage is None else usage.prompt_tokens
    return RequestResult(tokens, total_s, first, last, prompt_tokens=prompt)


async def send_request(client: httpx.AsyncClient, config: BenchConfig, index: int) -> RequestResult:
    """Send request ``index`` and time every line of its stream; failures become results."""
    path = "chat/completions" if config.endpoint == "chat" else "completions"
    timed: list[tuple[float, str]] = []
    start = time.perf_counter()
    try:
        async with client.stream("POST", path, json=request_body(config, index)) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:300]
                error = f"HTTP {response.status_code}: {detail}"
                return RequestResult(0, time.perf_counter() - start, error=error)
            async for line in response.aiter_lines():
                timed.append((time.perf_counter() - start, line))
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
        return RequestResult(0, time.perf_counter() - start, error=error)
    return tally_stream(timed, time.perf_counter() - start)


async def run_level(
    client: httpx.AsyncClient, config: BenchConfig, concurrency: int, requests: int, first: int
) -> LevelSummary:
    """Send ``requests`` requests (numbered from ``first``) with ``concurrency`` in flight."""
    indices = iter(range(first, first + requests))
    results: list[RequestResult] = []

    async def worker() -> None:
        # One shared iterator: a worker takes the next request as soon as its last one ends.
        for index in indices:
            results.append(await send_request(client, config, index))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return summarize_level(concurrency, results, time.perf_counter() - start)


async def run_levels(
    client: httpx.AsyncClient,
    config: BenchConfig,
    levels: Sequence[int],
    requests_per_level: int | None = None,
    warmup: int = 0,
) -> list[LevelSummary]:
    """Run every level in turn; each request gets a fresh prompt index."""
    if warmup:
        await run_level(client, config, 1, warmup, 0)
    summaries: list[LevelSummary] = []
    next_index = warmup
    for concurrency in levels:
        count = requests_per_level or max(4, 2 * concurrency)
        summaries.append(await run_level(client, config, concurrency, count, next_index))
        next_index += count
        level = summaries[-1]
        print(
            f"c={concurrency}: {level.requests} requests, {level.errors} errors, "
            f"{level.aggregate_tps:.1f} t/s aggregate",
            file=sys.stderr,
        )
        for error in level.error_samples:
            print(f"  error: {error}", file=sys.stderr)
    return summaries
