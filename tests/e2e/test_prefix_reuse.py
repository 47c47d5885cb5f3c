"""llama.cpp prefix reuse on the real models: what it saves, and that it never changes
an answer, on a full-attention model and on a sliding-window one (Gemma 3, window 512).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve
from tests.solo_llama import solo_llama

pytestmark = pytest.mark.e2e

MODELS = load_models_file(MODELS_FILE, default_cache_dir()).models
GEMMA = MODELS["gemma-3-270m"].path
TOLERANCE = 0.25  # logits, as the batching test: a batched pass differs in the last bits


def lines(first: int, count: int) -> str:
    """Distinct, deterministic text: about 12 tokens a line."""
    return "".join(f"Entry {n}: the {n % 7}th crate holds {n * 37 % 101} apples.\n" for n in
                   range(first, first + count))  # fmt: skip


def complete(http: httpx.Client, model: str, prompt: str, max_tokens: int) -> dict[str, object]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    resp = http.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    reply: dict[str, object] = resp.json()
    return reply


def cached(reply: dict[str, object]) -> int:
    usage = reply["usage"]
    assert isinstance(usage, dict)
    return int(usage["prompt_tokens_details"]["cached_tokens"])


def text_of(reply: dict[str, object]) -> str:
    choices = reply["choices"]
    assert isinstance(choices, list)
    return str(choices[0]["text"])


def worst_gap(scorer: object, prompt: str, answer: str) -> float:
    """How far below the solo argmax the answer's tokens are, in logits (0: all argmax)."""
    p = scorer.tokenize(prompt.encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
    a = scorer.tokenize(answer.encode(), add_bos=False, special=True)  # type: ignore[attr-defined]
    assert a, "the answer is empty"
    scorer.reset()  # type: ignore[attr-defined]
    scorer.eval(p + a)  # type: ignore[attr-defined]
    logits = np.asarray(scorer.scores)[len(p) - 1 : len(p) + len(a) - 1]  # type: ignore[attr-defined]
    chosen = logits[np.arange(len(a)), a]
    return float((logits.max(axis=1) - chosen).max())


def test_the_next_turn_reuses_the_conversation_and_answers_the_same(http: httpx.Client) -> None:
    """On the default model (full attention) a prompt that extends an earlier one is
    prefilled from where the earlier one's KV ends, and ``cached_tokens`` says so; the
    answer is the same as with nothing cached."""
    head = lines(5000, 40)
    first = complete(http, "default", head + "Question: how many entries? Answer:", 8)
    assert cached(first) == 0
    follow = head + "Question: how many entries? Answer:" + text_of(first) + "\nAnd the last one?"
    again = complete(http, "default", follow, 8)
    assert cached(again) >= len(head) // 8  # most of the earlier prompt was not prefilled
    fresh = complete(http, "default", lines(6000, 1) + follow, 8)  # same tail, no usable prefix
    assert cached(fresh) < cached(again)


@pytest.fixture(scope="module")
def gemma_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Gemma 3 with one running sequence and one cached prefix, so which KV cells get
    reused is predictable."""
    folder = tmp_path_factory.mktemp("gemma-swa")
    models = folder / "models.toml"
    models.write_text(
        f'[models.g]\npath = "{GEMMA}"\ncontext_length = 4096\nmax_sequences = 1\n'
        "options = { prefix_cache_slots = 1 }\n"
    )
    with (
        serve(folder / "server.log", models=("g",), models_file=models) as base,
        httpx.Client(base_url=base, timeout=300) as http,
    ):
        yield http


@pytest.fixture(scope="module")
def gemma_scorer() -> object:
    return solo_llama(model_path=str(GEMMA), n_ctx=2048, n_threads=2, logits_all=True,
                      verbose=False)  # fmt: skip


@pytest.mark.parametrize("continues", [False, True], ids=["shares-its-start", "continues-it"])
def test_sliding_window_reuse_never_reads_overwritten_cells(
    gemma_alone: httpx.Client, gemma_scorer: object, continues: bool
) -> None:
    """A cached Gemma prefix longer than its 512-token window has cells that left the
    window; llama.cpp may hand those cells to another sequence. A later request that
    needs some of them again (one that shares the cached prompt's start, or one that
    continues it) must be prefilled afresh rather than read whatever overwrote them, so
    every answer token is still the model's greedy choice when scored alone."""
    http = gemma_alone
    shared = lines(0, 30)  # ~510 tokens
    complete(http, "g", "Zebra notes.\n" + lines(300, 14), 4)  # slot 0: ~260 cells
    cached = complete(http, "g", shared + lines(100, 15), 16)  # slot 1: ~780 tokens
    # Slot 0 is the colder one: this prompt takes it, and its ~750 cells run on from
    # slot 0's ~260 into slot 1's oldest ones, outside slot 1's window.
    complete(http, "g", "Yak notes.\n" + lines(200, 42), 4)
    if continues:
        prompt = shared + lines(100, 15) + text_of(cached) + "\nEntry 9999: the last crate holds"
    else:
        prompt = shared + "Entry 9999: the last crate holds"
    reply = complete(http, "g", prompt, 24)
    gap = worst_gap(gemma_scorer, prompt, text_of(reply))
    assert gap < TOLERANCE, f"an answer token was {gap:.3f} logits below the solo argmax"


def test_a_new_conversation_shares_the_system_prompt_and_leaves_the_old_one_whole(
    http: httpx.Client,
) -> None:
    """Two conversations with the same long system prompt: the second prefills only
    what differs, and the first one's next turn still finds its whole history."""
    system = "You are a careful assistant. Reference data follows.\n" + lines(7000, 25)

    def chat(messages: list[dict[str, str]]) -> tuple[str, int, int]:
        body = {"model": "default", "messages": messages, "max_tokens": 8, "temperature": 0}
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        reply = resp.json()
        usage = reply["usage"]
        text = reply["choices"][0]["message"]["content"]
        return text, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]

    first = [{"role": "system", "content": system}, {"role": "user", "content": "Entry 7003?"}]
    answer, first_prompt, _ = chat(first)
    _, _, shared = chat([first[0], {"role": "user", "content": "Which crate is fullest?"}])
    assert shared >= first_prompt - 20  # the system prompt, from the first conversation
    turn = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "Why?"}]
    _, _, continued = chat(turn)
    assert continued >= first_prompt  # its own history, question included, not just the system
