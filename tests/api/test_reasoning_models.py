"""A reasoning model through every dialect, in-process: the fake model (which echoes the
last message) has models.toml's ``reasoning_parser = "think"``, so a message that says
``<think>...</think>`` comes back with its thinking split from the answer, streamed and
whole, and tool calls after it stream their arguments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from backends.hardware import detect
from backends.registry import PluginInfo
from server.api.app import create_app
from server.config import load_models_file
from server.engine.hub import ModelHub
from server.engine.metrics import Metrics
from tests.api.conftest import BASE_URL
from tests.api.test_anthropic import events as anthropic_events
from tests.api.test_api import CHAT, sse_events
from tests.api.test_responses import RESPONSES
from tests.api.test_responses import events as responses_events
from tests.api.test_tools import CALL, TOOLS
from tests.fakes import FakePlugin

MODELS = """
default = "thinker"

[models.thinker]
backend = "fake"
path = "thinker.fake"
context_length = 1024
reasoning_parser = "think"
"""
THOUGHT, ANSWER = "Six times seven.", "It is 42."
SAID = f"<think>{THOUGHT}</think>{ANSWER}"
ASK = [{"role": "user", "content": SAID}]
CALLING = f"<think>{THOUGHT}</think>{CALL}"


@pytest.fixture
def thinker(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    hub = ModelHub(
        load_models_file(path, tmp_path), ["thinker"], hardware=detect(), metrics=Metrics(),
        max_waiting=4, plugins={"fake": PluginInfo("fake", FakePlugin(), None)},
    )  # fmt: skip
    with TestClient(create_app(hub), base_url=BASE_URL, raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r


# --- chat completions ------------------------------------------------------------------


def test_chat_whole_and_streamed(thinker: TestClient) -> None:
    message = post(thinker, CHAT, {"model": "thinker", "messages": ASK}).json()["choices"][0]
    assert message["message"] == {"role": "assistant", "content": ANSWER,
                                  "reasoning_content": THOUGHT, "reasoning": THOUGHT}  # fmt: skip
    body = {"model": "thinker", "messages": ASK, "stream": True}
    deltas = [e["choices"][0]["delta"] for e in sse_events(post(thinker, CHAT, body).text)]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == THOUGHT
    assert "".join(d.get("reasoning", "") for d in deltas) == THOUGHT
    assert "".join(d.get("content") or "" for d in deltas) == ANSWER


def test_thinking_demanded_of_a_reasoning_model_is_served(thinker: TestClient) -> None:
    kwargs = {"enable_thinking": True}
    body = {"model": "thinker", "messages": ASK, "chat_template_kwargs": kwargs}
    assert post(thinker, CHAT, body).json()["choices"][0]["message"]["content"] == ANSWER


def test_chat_tool_call_after_thinking_streams_its_arguments(thinker: TestClient) -> None:
    body = {"model": "thinker", "messages": [{"role": "user", "content": CALLING}],
            "tools": TOOLS, "stream": True}  # fmt: skip
    events = sse_events(post(thinker, CHAT, body).text)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    parts = [t for d in deltas for t in d.get("tool_calls", [])]
    assert parts[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert json.loads("".join(p["function"]["arguments"] for p in parts)) == {"city": "Paris"}
    assert "".join(d.get("reasoning", "") for d in deltas) == THOUGHT
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_text_completions_stay_raw(thinker: TestClient) -> None:
    body = {"model": "thinker", "prompt": SAID, "max_tokens": 100}
    assert post(thinker, "/v1/completions", body).json()["choices"][0]["text"] == SAID


# --- Anthropic -------------------------------------------------------------------------


def test_anthropic_whole_and_streamed(thinker: TestClient) -> None:
    body = {"model": "thinker", "max_tokens": 200, "messages": ASK,
            "thinking": {"type": "enabled", "budget_tokens": 100}}  # fmt: skip
    content = post(thinker, "/v1/messages", body).json()["content"]
    assert [b["type"] for b in content] == ["thinking", "text"]
    assert content[0]["thinking"] == THOUGHT and content[0]["signature"]
    assert content[1]["text"] == ANSWER
    got = anthropic_events(post(thinker, "/v1/messages", {**body, "stream": True}).text)
    starts = [p["content_block"]["type"] for n, p in got if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [p["delta"] for n, p in got if n == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == THOUGHT
    assert "".join(d.get("text", "") for d in deltas) == ANSWER
    kinds = [d["type"] for d in deltas]
    assert kinds.index("signature_delta") == kinds.index("text_delta") - 1


def test_anthropic_tool_use_after_thinking(thinker: TestClient) -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    body = {"model": "thinker", "max_tokens": 200, "stream": True, "tools": [tool],
            "messages": [{"role": "user", "content": CALLING}]}  # fmt: skip
    got = anthropic_events(post(thinker, "/v1/messages", body).text)
    starts = [p["content_block"] for n, p in got if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "tool_use"]
    pieces = [p["delta"]["partial_json"] for n, p in got
              if n == "content_block_delta" and p["index"] == 1]  # fmt: skip
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"


# --- Responses -------------------------------------------------------------------------


def test_responses_whole_streamed_and_replayed(thinker: TestClient) -> None:
    body = {"model": "thinker", "input": SAID, "reasoning": {"effort": "high"}}
    whole = post(thinker, RESPONSES, body).json()
    assert [o["type"] for o in whole["output"]] == ["reasoning", "message"]
    assert whole["output"][0]["content"] == [{"type": "reasoning_text", "text": THOUGHT}]
    got = responses_events(post(thinker, RESPONSES, {**body, "stream": True}).text)
    deltas = [e["delta"] for e in got if e["type"] == "response.reasoning_text.delta"]
    assert "".join(deltas) == THOUGHT
    done = got[-1]["response"]
    assert [o["type"] for o in done["output"]] == ["reasoning", "message"]
    follow = {"model": "thinker", "input": "Sure?", "previous_response_id": done["id"]}
    assert post(thinker, RESPONSES, follow).json()["output"][0]["content"][0]["text"] == "Sure?"


# --- Ollama ----------------------------------------------------------------------------


def test_ollama_whole_and_streamed(thinker: TestClient) -> None:
    body = {"model": "thinker", "messages": ASK, "think": True, "stream": False}
    message = post(thinker, "/api/chat", body).json()["message"]
    assert (message["thinking"], message["content"]) == (THOUGHT, ANSWER)
    lines = [json.loads(ln) for ln in post(thinker, "/api/chat", {**body, "stream": True})
             .text.splitlines()]  # fmt: skip
    assert "".join(ln["message"].get("thinking", "") for ln in lines) == THOUGHT
    assert "".join(ln["message"]["content"] for ln in lines) == ANSWER
    generate = {"model": "thinker", "prompt": SAID, "stream": False}
    reply = post(thinker, "/api/generate", generate).json()
    assert (reply["thinking"], reply["response"]) == (THOUGHT, ANSWER)
