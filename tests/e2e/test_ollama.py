"""The real ``ollama`` Python client against a real server and the default model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

pytestmark = pytest.mark.e2e

MODEL = "qwen2.5-coder:0.5b"  # Ollama's name for the default model: an alias in models.toml
GREEDY = {"temperature": 0, "num_predict": 40}
ASK = [{"role": "user", "content": "What is 2 + 2? Answer with the number only."}]


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
      city: The city
    """
    return '{"sky": "sunny", "celsius": 17}'


@pytest.fixture(scope="module")
def olla(base_url: str) -> Iterator[ollama.Client]:
    with ollama.Client(host=base_url, timeout=120) as client:
        yield client


def test_chat_whole_and_streamed_agree(olla: ollama.Client) -> None:
    whole = olla.chat(MODEL, messages=ASK, options=GREEDY)
    assert whole.model == MODEL and whole.done and whole.done_reason == "stop"
    assert whole.message.role == "assistant" and "4" in (whole.message.content or "")
    assert whole.prompt_eval_count and whole.prompt_eval_count > 10
    assert whole.eval_count and whole.eval_count > 0
    assert whole.total_duration and whole.eval_duration is not None
    parts = list(olla.chat(MODEL, messages=ASK, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_whole_and_streamed(olla: ollama.Client) -> None:
    prompt = "Write the Python keyword that defines a function. One word."
    whole = olla.generate(MODEL, prompt, options=GREEDY)
    assert whole.done and "def" in (whole.response or "")
    parts = list(olla.generate(MODEL, prompt, options=GREEDY, stream=True))
    assert "".join(p.response or "" for p in parts) == whole.response
    short = olla.generate(MODEL, "Count from one to fifty in words.", options={"num_predict": 3})
    assert short.done_reason == "length" and short.eval_count == 3


def test_fill_in_the_middle_with_suffix(olla: ollama.Client) -> None:
    answer = olla.generate(
        MODEL, "def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", options=GREEDY
    )
    assert "a + b" in (answer.response or "")


def test_a_tool_call_round_trip(olla: ollama.Client) -> None:
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = olla.chat(MODEL, messages=question, tools=[get_weather], options=GREEDY)
    (call,) = first.message.tool_calls or []
    assert call.function.name == "get_weather" and first.done_reason == "stop"
    assert "paris" in str(call.function.arguments.get("city", "")).lower()
    result = {"role": "tool", "content": get_weather("Paris"), "tool_name": "get_weather"}
    turn = [*question, first.message, result]  # the client's own message, sent back
    answer = olla.chat(MODEL, messages=turn, tools=[get_weather], options=GREEDY)
    assert answer.done_reason == "stop" and not answer.message.tool_calls
    assert "17" in (answer.message.content or "")
    assert (answer.prompt_eval_count or 0) > (first.prompt_eval_count or 0) + 20  # the history


def test_format_json_schema(olla: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]}
    answer = olla.chat(MODEL, messages=ASK, format=schema, options=GREEDY)
    assert json.loads(answer.message.content or "") == {"sum": 4}


def test_list_ps_show_and_version(olla: ollama.Client, http: httpx.Client) -> None:
    # Every model whose file is here: the two loaded ones and the pulled embedding model.
    names = [m.model for m in olla.list().models]
    assert names == ["qwen2.5-coder-0.5b:latest", "gemma-3-270m:latest", "all-minilm-l6-v2:latest"]
    qwen = olla.list().models[0]
    assert qwen.details and qwen.details.family == "qwen2"
    assert qwen.details.quantization_level == "Q4_K_M" and qwen.size and qwen.size > 10**8
    loaded = olla.ps().models
    assert [m.model for m in loaded] == names[:2] and loaded[0].context_length == 32768
    shown = olla.show(MODEL)
    assert shown.capabilities and {"completion", "tools", "insert"} <= set(shown.capabilities)
    assert shown.modelinfo and shown.modelinfo["qwen2.context_length"] == 32768
    assert shown.details and shown.details.parameter_size == "0.5B"
    assert http.get("/").text == "Ollama is running"
    assert http.get("/api/version").json()["version"]


def test_pull_of_a_model_models_toml_names(olla: ollama.Client) -> None:
    assert olla.pull(MODEL).status == "success"  # present: verified, nothing fetched
    statuses = [p.status for p in olla.pull("gemma3", stream=True)]
    assert statuses[-1] == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        olla.pull("llama3:8b")
    assert missing.value.status_code == 404


def test_errors_are_the_clients_typed_exceptions(olla: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        olla.chat("llama3:8b", messages=ASK)
    assert missing.value.status_code == 404 and "not found" in missing.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        olla.chat(MODEL, messages=ASK, options={"repeat_penalty": 1.3})
    assert refused.value.status_code == 400 and "repeat_penalty" in refused.value.error
    with pytest.raises(ollama.ResponseError) as thinking:
        olla.chat(MODEL, messages=ASK, think=True)
    assert thinking.value.status_code == 400 and "thinking" in thinking.value.error
    with pytest.raises(ollama.ResponseError) as long:
        olla.chat(MODEL, messages=[{"role": "user", "content": "x " * 40000}])
    assert long.value.status_code == 400 and "context" in long.value.error
