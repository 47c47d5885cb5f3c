"""Two models in one server, routed by the ``model`` field; /v1/models and /metrics."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e


def test_models_lists_both_loaded(client: openai.OpenAI, http: httpx.Client) -> None:
    data = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert data["qwen2.5-coder-0.5b"]["context_length"] == 32768
    assert data["gemma-3-270m"]["context_length"] == 8192
    for name in ("qwen2.5-coder-0.5b", "gemma-3-270m"):
        assert data[name]["loaded"] is True
        assert data[name]["backend"] == "llamacpp"
        assert data[name]["object"] == "model"
    assert {"default", "qwen2.5-coder"} <= set(data["qwen2.5-coder-0.5b"]["aliases"])
    assert "gemma3" in data["gemma-3-270m"]["aliases"]
    ids = {m.id for m in client.models.list()}
    assert {"qwen2.5-coder-0.5b", "gemma-3-270m"} <= ids


@pytest.mark.parametrize(
    ("alias", "name"),
    [("gemma3", "gemma-3-270m"), ("gemma-3-270m", "gemma-3-270m"),
     ("default", "qwen2.5-coder-0.5b"), ("qwen2.5-coder", "qwen2.5-coder-0.5b")],
)  # fmt: skip
def test_model_field_routes_the_request(client: openai.OpenAI, alias: str, name: str) -> None:
    r = client.completions.create(
        model=alias, prompt="The capital of France is", temperature=0, max_tokens=4
    )
    assert r.model == name
    assert r.usage is not None and r.usage.completion_tokens >= 1


def test_the_two_models_answer_differently(client: openai.OpenAI) -> None:
    """Routing reaches a different model, not only a different name."""
    answers = [
        client.completions.create(
            model=model, prompt="def add(a, b):", temperature=0, max_tokens=12
        )
        for model in ("gemma3", "default")
    ]
    assert answers[0].choices[0].text != answers[1].choices[0].text


def test_base_model_without_chat_template_refuses_chat(http: httpx.Client) -> None:
    body = {"model": "gemma3", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert re.search(r"no chat template.*/v1/completions", error["message"])


def _generated(metrics: str, model: str) -> float:
    match = re.search(
        rf'^hearth_generation_tokens_total\{{model="{re.escape(model)}"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


def test_metrics_count_generated_tokens(client: openai.OpenAI, http: httpx.Client) -> None:
    before = _generated(http.get("/metrics").text, "gemma-3-270m")
    client.completions.create(model="gemma3", prompt="Once upon", temperature=0, max_tokens=5)
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE hearth_generation_tokens_total counter" in response.text
    assert _generated(response.text, "gemma-3-270m") == before + 5
