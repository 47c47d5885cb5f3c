"""The API as ``curl`` sees it: raw Server-Sent Events and plain JSON."""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.e2e

BODY = {
    "model": "default",
    "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    "temperature": 0,
    "max_tokens": 8,
}


def _curl(url: str, body: dict[str, object], *flags: str) -> str:
    command = ["curl", "--silent", "--show-error", "--fail-with-body", *flags]
    command += ["-H", "Content-Type: application/json", "-d", json.dumps(body), url]
    done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    return done.stdout.decode()


def test_curl_streams_server_sent_events(base_url: str) -> None:
    raw = _curl(f"{base_url}/v1/chat/completions", {**BODY, "stream": True}, "-N")
    lines = raw.split("\n")
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events), raw
    assert events[-1] == "data: [DONE]"
    assert raw.endswith("data: [DONE]\n\n")
    # Each event is one line followed by a blank line.
    assert raw.count("\n\n") == len(events)
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "Paris" in text


def test_curl_non_streamed_json(base_url: str) -> None:
    body = json.loads(_curl(f"{base_url}/v1/chat/completions", BODY))
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_curl_streams_completions(base_url: str) -> None:
    body = {"model": "default", "prompt": "Count: 1, 2, 3,", "temperature": 0, "max_tokens": 6}
    raw = _curl(f"{base_url}/v1/completions", {**body, "stream": True}, "-N")
    events = [line for line in raw.split("\n") if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["text"] for c in chunks).startswith(" 4, 5")
