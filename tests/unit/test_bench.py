"""`hearth bench`: statistics, SSE parsing and the level runner, without a network."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.cli.bench import run as bench
from server.cli.bench.load import (
    BenchConfig,
    StreamEvent,
    build_prompt,
    parse_sse_line,
    request_body,
    run_levels,
    tally_stream,
)
from server.cli.bench.stats import (
    LevelSummary,
    RequestResult,
    format_table,
    founding_answer,
    interactive_concurrency,
    per_user_tps,
    percentile,
    registered_users,
    summarize_level,
)


def _chunk(content: str | None = None, **extra: object) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta}], **extra})


USAGE_LINE = 'data: {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 4}}'


def _level(concurrency: int, p10: float | None, errors: int = 0) -> LevelSummary:
    return LevelSummary(concurrency, 4, errors, 1.0, 40, 40.0, p10, p10, 0.1, 0.2, 30.0)


# --- statistics ---------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 10, 25, 50, 90, 95, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 10) == 7.0
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_per_user_tps_counts_tokens_after_the_first() -> None:
    assert per_user_tps(5, 1.0, 3.0) == 2.0
    assert per_user_tps(1, 1.0, 3.0) is None
    assert per_user_tps(5, 1.0, 1.0) is None
    assert per_user_tps(5, None, 3.0) is None


def test_summarize_level() -> None:
    results = [
        RequestResult(11, 2.5, ttft_s=0.5, last_token_s=2.5, prompt_tokens=40),  # 5 t/s
        RequestResult(21, 3.0, ttft_s=1.0, last_token_s=3.0, prompt_tokens=60),  # 10 t/s
        RequestResult(0, 0.1, error="HTTP 500: boom"),
    ]
    level = summarize_level(2, results, wall_s=4.0)
    assert (level.concurrency, level.requests, level.errors) == (2, 3, 1)
    assert level.completion_tokens == 32
    assert level.aggregate_tps == 8.0
    assert level.per_user_tps_p50 == pytest.approx(7.5)
    assert level.per_user_tps_p10 == pytest.approx(5.5)
    assert level.ttft_p50_s == pytest.approx(0.75)
    assert level.ttft_p95_s == pytest.approx(0.975)
    assert level.prompt_tokens_mean == 50.0
    assert level.error_samples == ("HTTP 500: boom",)


def test_summarize_level_all_failed() -> None:
    failures = [RequestResult(0, 1.0, error=e) for e in ["a", "b", "a", "c", "d"]]
    level = summarize_level(4, failures, wall_s=1.0)
    assert level.errors == 5 and level.error_samples == ("a", "b", "c")
    assert level.aggregate_tps == 0.0
    assert level.per_user_tps_p10 is None and level.ttft_p50_s is None


def test_interactive_concurrency_is_the_largest_passing_level() -> None:
    levels = [_level(1, 20.0), _level(2, 12.0), _level(4, 5.0), _level(8, 4.9)]
    assert interactive_concurrency(levels) == 4
    assert registered_users(4) == 400
    assert "serves about 400 registered users" in founding_answer(levels)


def test_a_level_whose_users_wait_too_long_does_not_qualify() -> None:
    slow_start = LevelSummary(8, 16, 0, 1.0, 40, 40.0, 30.0, 30.0, 20.0, 60.0, 30.0)
    assert interactive_concurrency([_level(1, 20.0), slow_start]) == 1


def test_a_level_with_errors_does_not_qualify() -> None:
    assert interactive_concurrency([_level(1, 9.0), _level(2, 8.0, errors=1)]) == 1
    assert interactive_concurrency([_level(1, 4.0), _level(2, None)]) is None
    assert founding_answer([_level(1, 4.0)]).startswith("No measured concurrency")


def test_format_table_has_a_row_per_level() -> None:
    table = format_table([_level(1, 20.0), _level(16, None)]).splitlines()
    assert len(table) == 4
    assert table[0].split()[:3] == ["conc", "reqs", "err"]
    assert table[3].split()[0] == "16" and "-" in table[3].split()


# --- SSE parsing --------------------------------------------------------------


@pytest.mark.parametrize("line", ["", ": keep-alive", "event: message", "id: 3", "retry: 10"])
def test_parse_sse_line_ignores_non_data(line: str) -> None:
    assert parse_sse_line(line) is None


def test_parse_sse_line_chat_completions_and_usage() -> None:
    assert parse_sse_line(_chunk("Hi")) == StreamEvent(text="Hi")
    assert parse_sse_line('data:{"choices":[{"text":"x","index":0}]}') == StreamEvent(text="x")
    reasoning = 'data: {"choices":[{"delta":{"reasoning_content":"hm","content":null}}]}'
    assert parse_sse_line(reasoning) == StreamEvent(text="hm")
    assert parse_sse_line(_chunk(None, model="m")) == StreamEvent()
    usage = parse_sse_line(USAGE_LINE)
    assert usage == StreamEvent(completion_tokens=4, prompt_tokens=30)
    assert parse_sse_line("data: [DONE]") == StreamEvent(done=True)


def test_parse_sse_line_errors() -> None:
    event = parse_sse_line('data: {"error": {"message": "context full", "code": 400}}')
    assert event is not None and event.error == "context full"
    event = parse_sse_line('error: {"message": "boom"}')
    assert event is not None and event.error == '{"message": "boom"}'
    event = parse_sse_line("data: {not json")
    assert event is not None and event.error is not None and "bad JSON" in event.error


def test_tally_stream_uses_usage_and_content_times() -> None:
    lines = [
        (0.20, 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}'),
        (0.25, ""),
        (0.40, _chunk("One")),
        (0.50, _chunk(" two")),
        (0.60, _chunk(" three")),
        (0.70, _chunk(" four")),
        (0.71, 'data: {"choices":[{"delta":{},"finish_reason":"length"}]}'),
        (0.72, USAGE_LINE),
        (0.73, "data: [DONE]"),
    ]
    result = tally_stream(lines, total_s=0.75)
    assert result.ok
    assert (result.completion_tokens, result.prompt_tokens) == (4, 30)
    assert result.ttft_s == 0.40 and result.last_token_s == 0.70
    assert result.per_user_tps == pytest.approx(10.0)


def test_tally_stream_without_usage_counts_content_chunks() -> None:
    result = tally_stream([(0.1, _chunk("a")), (0.3, _chunk("b")), (0.4, "data: [DONE]")], 0.5)
    assert (result.completion_tokens, result.prompt_tokens) == (2, None)
    assert result.per_user_tps == pytest.approx(5.0)


def test_tally_stream_error_event_fails_the_request() -> None:
    lines = [(0.1, _chunk("a")), (0.2, 'data: {"error": {"message": "engine died"}}')]
    result = tally_stream(lines, 0.3)
    assert not result.ok and result.error == "engine died"


# --- requests -----------------------------------------------------------------


def test_prompts_are_distinct_unless_a_prefix_is_shared() -> None:
    a, b = build_prompt(1, 256), build_prompt(2, 256)
    assert a != b and a[:12] != b[:12]  # they part within the first line
    assert 700 < len(a.split()) / 256 * 1000 < 1500  # about a word per token
    c, d = build_prompt(1, 256, shared_prefix=True), build_prompt(2, 256, shared_prefix=True)
    assert c != d
    assert c.splitlines()[:-2] == d.splitlines()[:-2]
    assert len(build_prompt(1, 1024)) > 3 * len(a)


def test_prompts_change_with_the_seed_so_runs_miss_the_prompt_cache() -> None:
    assert build_prompt(1, 256, seed=7) == build_prompt(1, 256, seed=7)
    assert build_prompt(1, 256, seed=7)[:12] != build_prompt(1, 256, seed=8)[:12]
    shared = build_prompt(1, 256, shared_prefix=True, seed=7)
    assert (
        shared.splitlines()[0] != build_prompt(1, 256, shared_prefix=True, seed=8).splitlines()[0]
    )


def test_request_body_is_plain_openai_plus_extra() -> None:
    config = BenchConfig(model="m", max_tokens=16, extra_body={"ignore_eos": True})
    body = request_body(config, 3)
    assert body["model"] == "m" and body["max_tokens"] == 16 and body["temperature"] == 0
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "user" and body["ignore_eos"] is True
    plain = request_body(BenchConfig(model="m", endpoint="completions"), 3)
    assert "messages" not in plain and "ignore_eos" not in plain
    assert plain["prompt"] == build_prompt(3, 256)


class _FakeServer:
    """An httpx transport that streams a canned reply and records concurrency."""

    def __init__(self, fail_every: int = 0) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, object]] = []
        self.fail_every = fail_every

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.005)
        self.in_flight -= 1
        if self.fail_every and len(self.bodies) % self.fail_every == 0:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        sse = "\n\n".join([_chunk("a"), _chunk("b"), _chunk("c"), USAGE_LINE, "data: [DONE]"])
        return httpx.Response(200, text=sse + "\n\n", headers={"content-type": "text/event-stream"})


def _run(server: _FakeServer, levels: list[int], per_level: int | None) -> list[LevelSummary]:
    async def go() -> list[LevelSummary]:
        transport = httpx.MockTransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://x/v1") as client:
            return await run_levels(client, BenchConfig(model="m"), levels, per_level, warmup=1)

    return asyncio.run(go())


def test_run_levels_keeps_exactly_c_in_flight() -> None:
    server = _FakeServer()
    levels = _run(server, [1, 4], per_level=None)
    assert [(lv.concurrency, lv.requests, lv.errors) for lv in levels] == [(1, 4, 0), (4, 8, 0)]
    assert server.max_in_flight == 4
    assert len(server.bodies) == 1 + 4 + 8
    prompts = {str(body["messages"]) for body in server.bodies}
    assert len(prompts) == 13  # every request, warm-up included, has its own prompt
    assert all(lv.completion_tokens == 4 * lv.requests for lv in levels)


def test_run_levels_counts_http_errors() -> None:
    (level,) = _run(_FakeServer(fail_every=3), [2], per_level=6)
    assert level.errors == 2
    assert level.completion_tokens == 4 * 4


# --- command line and outputs -------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_add_arguments_defaults_and_lists() -> None:
    args = _parse()
    assert args.concurrency == [1, 2, 4, 8, 16] and args.max_tokens == 128
    assert args.endpoint == "chat" and args.requests_per_level is None
    args = _parse("--concurrency", "1, 3", "--extra-body", '{"ignore_eos": true}')
    assert args.concurrency == [1, 3] and args.extra_body == {"ignore_eos": True}


@pytest.mark.parametrize(
    "argv", [["--concurrency", "0"], ["--concurrency", "a"], ["--extra-body", "[1]"]]
)
def test_add_arguments_rejects_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_results_document_and_png(tmp_path: Path) -> None:
    args = _parse("--api-key", "sekrit", "--json", str(tmp_path / "r.json"))
    levels = [_level(1, 20.0), _level(2, 9.0), _level(4, 3.0)]
    document = bench.results_document(args, "m", "run-1", levels)
    text = json.dumps(document)
    assert "sekrit" not in text
    assert document["metadata"]["label"] == "run-1" and len(document["levels"]) == 3
    assert document["answer"]["concurrency"] == 2
    assert document["answer"]["registered_users"] == 200
    png = tmp_path / "sub" / "chart.png"
    bench.write_png(png, levels, "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
