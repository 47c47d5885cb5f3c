"""The requests that editor clients send, as they send them (see docs/ide.md)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

FIM_STOPS = [
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>",
]  # fmt: skip


def sse(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.read()
    lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


def test_continue_chat(http: httpx.Client) -> None:
    body = {
        "model": "default",
        "messages": [
            {"role": "system", "content": "You are a coding assistant."},
            {"role": "user", "content": "Name one Python keyword."},
        ],
        "stream": True,
        "max_tokens": 16,
        "temperature": 0,
        "stop": ["<|im_end|>"],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse(r)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text.strip() and events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_continue_autocomplete_with_its_own_fim_template(http: httpx.Client) -> None:
    prompt = "<|fim_prefix|>def square(x):\n    return <|fim_suffix|>\n<|fim_middle|>"
    body = {
        "model": "default",
        "prompt": prompt,
        "max_tokens": 16,
        "temperature": 0,
        "stop": FIM_STOPS,
        "stream": True,
    }
    with http.stream("POST", "/v1/completions", json=body) as r:
        events = sse(r)
    text = "".join(c["text"] for e in events for c in e["choices"])
    assert "x" in text and "*" in text, text


def test_zed_agent_chat_with_tools(http: httpx.Client) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the project",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
    body = {
        "model": "default",
        "messages": [
            {"role": "system", "content": "You help with this project."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Use the read_file tool to read README.md."}],
            },
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 64,
        "temperature": 0,
        "tools": [tool],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse(r)
    assert events[-1]["usage"]["completion_tokens"] > 0
    parts = [
        t for e in events if e["choices"] for t in e["choices"][0]["delta"].get("tool_calls", [])
    ]
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
    said = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert finish == "tool_calls", said
    assert parts[0]["function"]["name"] == "read_file"
    arguments = "".join(p["function"].get("arguments", "") for p in parts)
    assert "README" in json.loads(arguments)["path"]


def test_models_list_context_sizes(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    qwen = models["qwen2.5-coder-0.5b"]
    assert qwen["n_ctx"] == qwen["context_length"] == 32768
    assert qwen["fim"] is True and qwen["n_vocab"] > 150_000
    assert models["gemma-3-270m"]["fim"] is False
