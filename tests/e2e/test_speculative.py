"""Speculative decoding on the real default model: prompt lookup (on by default) and a
draft model, both exact; the per-request switch; the metrics.

At temperature 0 every token written with speculation must be the model's greedy
choice when the prompt and answer are re-scored alone, within the tolerance the
batching test uses (a pass that verifies several tokens computes the logits' last bits
otherwise than one-token steps). A seeded sampled request gives the same text twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve, wait_idle
from tests.e2e.test_batching import metric
from tests.solo_llama import solo_llama

pytestmark = pytest.mark.e2e

MODEL = "qwen2.5-coder-0.5b"
SOURCE = '''def parse_size(value):
    """A size in bytes from a number or a string such as "24GB"."""
    units = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    if isinstance(value, int):
        return value
    text = value.strip().upper()
    number = text.rstrip("KMGB")
    unit = text[len(number):]
    if unit not in units:
        raise ValueError(f"unknown unit {unit!r}")
    return int(float(number) * units[unit])


def parse_duration(value):
    """Seconds from a number or a string such as "5m"."""
    units = {"s": 1, "m": 60, "h": 3600}
    if isinstance(value, int | float):
        return float(value)
    return float(value[:-1]) * units[value[-1]]
'''
EDIT = f"Rename the function parse_size to size_in_bytes. Reply with the whole file.\n\n{SOURCE}"
PROMPTS = [
    EDIT,
    f"Add type hints to this code. Reply with the whole file.\n\n{SOURCE}",
    "Write a Python function that checks whether a number is prime.",
    "List the planets of the solar system, one per line.",
]
CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def complete(http: httpx.Client, prompt: str, **fields: object) -> str:
    body = {"model": "default", "prompt": CHATML.format(prompt), "max_tokens": 160,
            "temperature": 0, **fields}  # fmt: skip
    resp = http.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    text: str = resp.json()["choices"][0]["text"]
    return text


@pytest.fixture(scope="module")
def scorer() -> object:
    path = load_models_file(MODELS_FILE, default_cache_dir()).models[MODEL].path
    return solo_llama(model_path=str(path), n_ctx=2048, n_threads=2, logits_all=True, verbose=False)


def rescore_gap(scorer: object, prompt: str, answer: str) -> float:
    """How far below the solo argmax the answer's least likely-looking token is."""
    p = scorer.tokenize(CHATML.format(prompt).encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
    a = scorer.tokenize(answer.encode(), add_bos=False, special=True)  # type: ignore[attr-defined]
    assert scorer.detokenize(a).decode() == answer  # type: ignore[attr-defined]
    scorer.reset()  # type: ignore[attr-defined]
    scorer.eval(p + a)  # type: ignore[attr-defined]
    logits = np.asarray(scorer.scores)[len(p) - 1 : len(p) + len(a) - 1]  # type: ignore[attr-defined]
    return float((logits.max(axis=1) - logits[np.arange(len(a)), a]).max())


def drafted(http: httpx.Client, drafter: str, model: str = MODEL) -> tuple[float, float]:
    labels = {"model": model, "drafter": drafter}
    return (metric(http, "hearth_spec_draft_tokens_total", **labels),
            metric(http, "hearth_spec_accepted_tokens_total", **labels))  # fmt: skip


def test_prompt_lookup_is_exact_and_takes_most_of_an_edit(
    http: httpx.Client, base_url: str, scorer: object
) -> None:
    wait_idle(base_url)
    before = drafted(http, "ngram")
    answer = complete(http, EDIT)
    after = drafted(http, "ngram")
    assert "def parse_duration(value):" in answer  # it copies the file
    assert after[0] > before[0] and after[1] - before[1] > (after[0] - before[0]) / 2
    assert rescore_gap(scorer, EDIT, answer) < 0.25


def test_greedy_answers_with_and_without_speculation(
    http: httpx.Client, base_url: str, scorer: object
) -> None:
    """Each prompt's answer with speculation re-scores as greedy; those that differ from
    the answer without it differ only at a near tie (both re-score as greedy)."""
    wait_idle(base_url)
    for prompt in PROMPTS:
        fast = complete(http, prompt)
        plain = complete(http, prompt, speculative=False)
        assert rescore_gap(scorer, prompt, fast) < 0.25, prompt
        if fast != plain:
            assert rescore_gap(scorer, prompt, plain) < 0.25, prompt


def test_a_request_can_turn_speculation_off(http: httpx.Client, base_url: str) -> None:
    wait_idle(base_url)
    before = drafted(http, "ngram")
    complete(http, EDIT, speculative=False, max_tokens=40)
    assert drafted(http, "ngram") == before


def test_a_seeded_sampled_request_gives_the_same_text_twice(
    http: httpx.Client, base_url: str
) -> None:
    wait_idle(base_url)
    fields = {"temperature": 0.8, "seed": 4242, "max_tokens": 60}
    before = drafted(http, "ngram")
    first, second = complete(http, EDIT, **fields), complete(http, EDIT, **fields)
    assert first == second
    assert drafted(http, "ngram")[1] > before[1]  # it did speculate


def test_asking_for_speculation_where_there_is_no_drafter_is_refused(http: httpx.Client) -> None:
    """Gemma 3's sliding window cannot drop draft tokens, so it has no drafter."""
    body = {"model": "gemma-3-270m", "prompt": "Hello", "max_tokens": 4, "speculative": True}
    resp = http.post("/v1/completions", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "speculative"
    bad = http.post("/v1/completions", json={**body, "model": "default", "speculative": "yes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "speculative"


@pytest.fixture(scope="module")
def draft_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default model drafted by a second copy of itself: the only model with its
    tokenizer here (tests/draft_gguf.py's early exit guesses too badly to test with)."""
    folder = tmp_path_factory.mktemp("draft")
    path = load_models_file(MODELS_FILE, default_cache_dir()).models[MODEL].path
    models = folder / "models.toml"
    models.write_text(
        f'[models.target]\npath = "{path}"\ncontext_length = 4096\nmax_sequences = 4\n'
        '[models.target.speculative]\ndrafters = ["model"]\ndraft_model = "drafter"\n'
        f'[models.drafter]\npath = "{path}"\ncontext_length = 4096\nmax_sequences = 1\n'
    )
    with serve(folder / "server.log", ("target",), models) as url:
        yield url


def test_a_draft_model_is_exact_and_is_used(draft_server: str, scorer: object) -> None:
    with httpx.Client(base_url=draft_server, timeout=120) as http:
        prompt = PROMPTS[2]
        fast = complete(http, prompt, model="target")
        plain = complete(http, prompt, model="target", speculative=False)
        taken = drafted(http, "model", model="target")
        assert taken[1] > 0 and taken[1] > taken[0] / 2  # the same model agrees with itself
        assert rescore_gap(scorer, prompt, fast) < 0.25
        assert fast == plain or rescore_gap(scorer, prompt, plain) < 0.25
        rate = re.search(r'hearth_spec_acceptance_rate\{drafter="model",model="target"\} (\S+)',
                         http.get("/metrics").text)  # fmt: skip
        assert rate is not None and 0.5 < float(rate.group(1)) <= 1.0


def test_a_draft_model_with_another_tokenizer_is_refused(tmp_path: Path) -> None:
    models = load_models_file(MODELS_FILE, default_cache_dir()).models
    target, other = models[MODEL].path, models["gemma-3-270m"].path
    (tmp_path / "models.toml").write_text(
        f'[models.target]\npath = "{target}"\ncontext_length = 2048\n'
        '[models.target.speculative]\ndrafters = ["model"]\ndraft_model = "gemma"\n'
        f'[models.gemma]\npath = "{other}"\ncontext_length = 2048\n'
    )
    with (
        serve(tmp_path / "server.log", ("target",), tmp_path / "models.toml", wait_for=()) as url,
        httpx.Client(base_url=url, timeout=120) as http,
    ):
        resp = http.post(
            "/v1/completions", json={"model": "target", "prompt": "Hi", "max_tokens": 2}
        )
        assert resp.status_code == 503, resp.text
        assert "same tokenizer" in resp.json()["error"]["message"]
