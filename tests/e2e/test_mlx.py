"""``hearth serve`` with an MLX model: the same API, the same answers as llama.cpp.

One server holds the tiny Qwen2 model twice, as an MLX folder (backend "mlx") and as
its GGUF twin (llama.cpp), so every answer of the MLX backend can be checked against
the other engine through the real HTTP API and the real ``openai`` client.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import serve
from tests.e2e.test_batching import metric
from tests.tiny_model import TinyModel

pytestmark = pytest.mark.e2e
pytest.importorskip("mlx_lm", reason="the MLX backend needs mlx_lm (pip install 'hearth[mlx]')")

MLX, GGUF = "tiny-mlx", "tiny-gguf"
ASK = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


@pytest.fixture(scope="module")
def base(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlx-serve")
    models = folder / "models.toml"
    models.write_text(
        f'[models.{MLX}]\npath = "{tiny_model.mlx_dir}"\nbackend = "mlx"\n'
        "context_length = 4096\nmax_sequences = 4\n"
        f'[models.{GGUF}]\npath = "{tiny_model.gguf_path}"\n'
        "context_length = 4096\nmax_sequences = 4\n"
    )
    with serve(folder / "server.log", models=(MLX, GGUF), models_file=models) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as oa:
        yield oa


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=120.0) as c:
        yield c


def chat(client: openai.OpenAI, model: str, **extra: object) -> openai.types.chat.ChatCompletion:
    body: dict[str, object] = {"messages": ASK, "max_tokens": 16, "temperature": 0, **extra}
    return client.chat.completions.create(model=model, **body)  # type: ignore[call-overload,no-any-return]


def test_the_mlx_model_is_served_by_the_mlx_backend(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models[MLX]["loaded"] and models[GGUF]["loaded"]
    assert models[MLX]["fim"] is True
    assert models[MLX]["n_ctx"] == 4096


def test_chat_answers_like_llamacpp(client: openai.OpenAI) -> None:
    mine, theirs = chat(client, MLX), chat(client, GGUF)
    assert mine.choices[0].message.content
    assert mine.choices[0].message.content == theirs.choices[0].message.content
    assert mine.usage is not None and theirs.usage is not None
    assert mine.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert mine.usage.completion_tokens == theirs.usage.completion_tokens


def test_streamed_text_equals_the_whole_answer(client: openai.OpenAI) -> None:
    whole = chat(client, MLX).choices[0].message.content
    parts, finish = [], None
    for chunk in chat(client, MLX, stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        elif chunk.usage is not None:
            assert chunk.usage.completion_tokens == 16
    assert "".join(parts) == whole
    assert finish == "length"


def test_concurrent_requests_share_steps_and_keep_their_answers(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    questions = [f"Tell me about the number {n}." for n in range(6)]

    def ask(question: str) -> str:
        reply = client.chat.completions.create(
            model=MLX,
            messages=[{"role": "user", "content": question}],
            max_tokens=24,
            temperature=0,
        )
        return reply.choices[0].message.content or ""

    solo = [ask(q) for q in questions]
    with concurrent.futures.ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(ask, questions))
    assert together == solo
    assert metric(http, "hearth_step_sequences_max", model=MLX) >= 2


def test_completions_fim_and_stop_strings(http: httpx.Client) -> None:
    def complete(model: str, **extra: object) -> dict[str, object]:
        body = {"model": model, "max_tokens": 12, "temperature": 0, **extra}
        resp = http.post("/v1/completions", json=body)
        assert resp.status_code == 200, resp.text
        choice: dict[str, object] = resp.json()["choices"][0]
        return choice

    fim = {"prompt": "def add(a, b):\n", "suffix": "\n\nprint(add(1, 2))\n"}
    assert complete(MLX, **fim)["text"] == complete(GGUF, **fim)["text"]
    text = str(complete(MLX, prompt="def add(a, b):")["text"])
    assert len(text) > 2
    stop = text[1:3]
    stopped = complete(MLX, prompt="def add(a, b):", stop=[stop])
    assert stopped["finish_reason"] == "stop" and stop not in str(stopped["text"])


def test_same_seed_same_text(client: openai.OpenAI) -> None:
    def sample() -> str | None:
        return chat(client, MLX, temperature=1.0, seed=7).choices[0].message.content

    assert sample() == sample()


def test_negative_seeds_are_served_and_reproduce(client: openai.OpenAI) -> None:
    """Any seed in the API's 64-bit range answers (a negative one was a 500), the
    same seed gives the same text, and the model serves on."""

    def sample(seed: int) -> str | None:
        reply = chat(client, MLX, temperature=1.0, seed=seed, extra_body={"top_k": 0})
        return reply.choices[0].message.content

    for seed in (-1, -(2**63)):
        text = sample(seed)
        assert text and sample(seed) == text
    greedy = chat(client, MLX).choices[0].message.content
    assert greedy == chat(client, GGUF).choices[0].message.content


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": "required",
            },
            "tools",
        ),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_what_mlx_cannot_do_is_a_clear_400(
    http: httpx.Client, extra: dict[str, object], param: str
) -> None:
    body = {"model": MLX, "messages": ASK, "max_tokens": 4, **extra}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    plain = {"model": MLX, "messages": ASK, "max_tokens": 4}
    assert http.post("/v1/chat/completions", json=plain).status_code == 200


def test_tools_with_tool_choice_auto_render_through_the_template(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    mine = chat(client, MLX, tools=[tool], tool_choice="auto")
    theirs = chat(client, GGUF, tools=[tool], tool_choice="auto")
    assert mine.usage is not None and theirs.usage is not None
    assert (
        mine.usage.prompt_tokens
        == theirs.usage.prompt_tokens
        > chat(client, MLX).usage.prompt_tokens
    )  # type: ignore[union-attr]
    assert mine.choices[0].message.content == theirs.choices[0].message.content


def test_tokenize_on_the_mlx_model(http: httpx.Client) -> None:
    for model in (MLX, GGUF):
        resp = http.post("/tokenize", json={"model": model, "content": "héllo <|im_end|>"})
        assert resp.status_code == 200
    a = http.post("/tokenize", json={"model": MLX, "content": "héllo <|im_end|>"}).json()
    b = http.post("/tokenize", json={"model": GGUF, "content": "héllo <|im_end|>"}).json()
    assert a["tokens"] == b["tokens"]


def test_an_mlx_model_that_cannot_load_fails_alone(tmp_path: Path, tiny_model: TinyModel) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.good]\npath = "{tiny_model.gguf_path}"\ncontext_length = 512\n'
        f'[models.bad]\npath = "{tmp_path}"\nbackend = "mlx"\n'
    )
    (tmp_path / "config.json").write_text('{"model_type": "no-such-arch"}')
    log = tmp_path / "s.log"
    with (
        serve(log, models=("good", "bad"), models_file=models, wait_for=("good",)) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        deadline = time.monotonic() + 60  # its runner starts, fails to load, and says why
        while time.monotonic() < deadline:
            bad = c.post("/v1/completions", json={"model": "bad", "prompt": "x", "max_tokens": 1})
            assert bad.status_code == 503, bad.text
            if "is loading" not in bad.json()["error"]["message"]:
                break
            time.sleep(0.2)
        assert "MLX could not load" in bad.json()["error"]["message"]
        good = c.post("/v1/completions", json={"model": "good", "prompt": "x", "max_tokens": 1})
        assert good.status_code == 200


def test_a_disconnected_stream_frees_its_sequence_and_spares_the_others(
    base: str, client: openai.OpenAI, http: httpx.Client
) -> None:

    body = {"model": MLX, "prompt": "count", "max_tokens": 3000, "stream": True}
    body["ignore_eos"] = True
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        other = pool.submit(chat, client, MLX, max_tokens=24)
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as resp:
            lines = resp.iter_lines()
            assert sum(1 for _, line in zip(range(6), lines, strict=False) if line) >= 3
        answer = other.result(timeout=120)
    assert answer.choices[0].finish_reason == "length"
    deadline = time.monotonic() + 30
    while metric(http, "hearth_requests_running", model=MLX) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(http, "hearth_requests_running", model=MLX) == 0


def test_infill_matches_llamacpp_and_n_is_refused_the_same(http: httpx.Client) -> None:
    infill = {
        "input_prefix": "def add(a, b):\n",
        "input_suffix": "\n",
        "input_extra": [{"filename": "util.py", "text": "X = 1\n"}],
        "n_predict": 8,
        "temperature": 0,
    }
    mine = http.post("/infill", json={**infill, "model": MLX})
    theirs = http.post("/infill", json={**infill, "model": GGUF})
    assert mine.status_code == theirs.status_code == 200, mine.text
    assert mine.json()["content"] == theirs.json()["content"]
    assert mine.json()["tokens_evaluated"] == theirs.json()["tokens_evaluated"]
    body = {"messages": ASK, "max_tokens": 6, "n": 2, "model": MLX}
    refused = http.post("/v1/chat/completions", json=body)  # as on llama.cpp
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"
