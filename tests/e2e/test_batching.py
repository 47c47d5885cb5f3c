"""Continuous batching on the real model: isolation, many streams, disconnects, 429."""

from __future__ import annotations

import concurrent.futures
import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve
from tests.solo_llama import solo_llama

pytestmark = pytest.mark.e2e

WORDS = [
    "apple", "river", "candle", "tiger", "marble", "pencil", "rocket", "violin",
    "garden", "silver", "thunder", "orange", "castle", "button", "forest", "dragon",
]  # fmt: skip
CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", re.M)
    found = pattern.search(http.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_sixteen_concurrent_requests_each_get_their_own_word(client: openai.OpenAI) -> None:
    def ask(word: str) -> str:
        reply = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": f"Repeat this word exactly once: {word}"}],
            temperature=0,
            max_tokens=8,
        )
        return reply.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(len(WORDS)) as pool:
        answers = list(pool.map(ask, WORDS))
    for word, answer in zip(WORDS, answers, strict=True):
        said = {w for w in WORDS if w in answer.lower()}
        assert said == {word}, (word, answer)


def test_sixteen_streams_complete(client: openai.OpenAI) -> None:
    def stream(i: int) -> tuple[str, str | None]:
        parts, finish = [], None
        for chunk in client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": f"Count from {i} to {i + 20}."}],
            max_tokens=24,
            stream=True,
        ):
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        return "".join(parts), finish

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(stream, range(16)))
    assert all(text and finish in ("stop", "length") for text, finish in results)


@pytest.fixture(scope="module")
def scorer() -> object:
    """The default model loaded alone in this process, to re-score answers solo."""
    path = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
    return solo_llama(model_path=str(path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)


def test_batched_greedy_tokens_are_the_solo_greedy_choice(
    http: httpx.Client, scorer: object
) -> None:
    """At temperature 0, every token a batched request produced is the argmax (within
    float tolerance) when its prompt and answer are re-scored alone."""
    import numpy as np

    prompts = [CHATML.format(f"Write one sentence about the number {n}.") for n in range(8)]

    def complete(prompt: str) -> str:
        body = {"model": "default", "prompt": prompt, "max_tokens": 24, "temperature": 0}
        resp = http.post("/v1/completions", json=body)
        assert resp.status_code == 200, resp.text
        text: str = resp.json()["choices"][0]["text"]
        return text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(complete, prompts))
    worst = 0.0
    for prompt, answer in zip(prompts, answers, strict=True):
        p = scorer.tokenize(prompt.encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
        a = scorer.tokenize(answer.encode(), add_bos=False, special=True)  # type: ignore[attr-defined]
        assert scorer.detokenize(a).decode() == answer  # type: ignore[attr-defined]
        scorer.reset()  # type: ignore[attr-defined]
        scorer.eval(p + a)  # type: ignore[attr-defined]
        logits = np.asarray(scorer.scores)[len(p) - 1 : len(p) + len(a) - 1]  # type: ignore[attr-defined]
        chosen = logits[np.arange(len(a)), a]
        gap = float((logits.max(axis=1) - chosen).max())
        worst = max(worst, gap)
    assert worst < 0.25, f"a batched token was {worst:.3f} logits below the solo argmax"


def test_same_seed_same_text_when_it_runs_alone(client: openai.OpenAI) -> None:
    """What the README promises for seeds: the same seed, prompt and settings give the
    same text when the request runs alone, and a seeded prompt is always prefilled
    afresh (the second one finds the first's KV cached and does not use it). With other
    requests in its steps the text may differ (README, "Prefix reuse")."""

    def sample() -> tuple[str, int]:
        reply = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Invent a name for a cat."}],
            temperature=1.0,
            seed=1234,
            max_tokens=16,
        )
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        return reply.choices[
            0
        ].message.content or "", reply.usage.prompt_tokens_details.cached_tokens or 0

    first, second = sample(), sample()
    assert first == second
    assert first[1] == second[1] == 0


def test_disconnect_frees_the_sequence(http: httpx.Client, base_url: str) -> None:
    aborted = metric(
        http, "hearth_requests_total", model="qwen2.5-coder-0.5b", finish_reason="aborted"
    )
    body = {
        "model": "default", "stream": True, "max_tokens": 2000, "ignore_eos": True,
        "messages": [{"role": "user", "content": "Write a very long story."}],
    }  # fmt: skip
    with (
        httpx.Client(base_url=base_url, timeout=60) as own,
        own.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        for n, _line in enumerate(resp.iter_lines()):
            if n > 6:
                break  # leave mid-stream: the connection closes here
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if metric(http, "hearth_requests_running", model="qwen2.5-coder-0.5b") == 0:
            break
        time.sleep(0.05)
    assert metric(http, "hearth_requests_running", model="qwen2.5-coder-0.5b") == 0
    after = metric(
        http, "hearth_requests_total", model="qwen2.5-coder-0.5b", finish_reason="aborted"
    )
    assert after == aborted + 1
    served = http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 4})
    assert served.status_code == 200


def test_queue_bound_gives_429_with_retry_after(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    path = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
    models.write_text(f'[models.tiny]\npath = "{path}"\ncontext_length = 2048\nmax_sequences = 1\n')
    with serve(tmp_path / "log", ("tiny",), models, {"HEARTH_MAX_QUEUE": "1"}) as base:
        body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": True}

        def post(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=120) as c:
                return c.post("/v1/completions", json=body)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(post, range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429], codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "queue_full"
