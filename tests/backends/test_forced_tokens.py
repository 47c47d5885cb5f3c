"""Forced tokens (a reasoning budget's close tag) through both backends, on the tiny
model: fed with the last sampled token, they leave a sequence exactly where a prompt
holding them would, alone or beside another sequence in the batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from backends.base import Backend, ChatMessage, Work
from tests.backends.drive import GREEDY, generate, request
from tests.tiny_model import TinyModel

FORCED_AFTER = 2  # sampled tokens before the close tag is forced
STEPS = 8


@pytest.fixture(scope="module")
def mlx(tiny_model: TinyModel) -> Iterator[Backend]:
    pytest.importorskip("mlx_lm", reason="the MLX backend needs mlx_lm (pip install 'hearth[mlx]')")
    from backends.mlx.backend import MlxPlugin

    backend = MlxPlugin().load(request(tiny_model.mlx_dir))
    yield backend
    backend.close()


def run_forced(backend: Backend, prompts: Sequence[list[int]], forced: list[int]) -> list[int]:
    """Sequence 0's tokens, the forced ones among them, with the others decoding beside."""
    todo = {i: len(p) - backend.add(i, p, GREEDY) for i, p in enumerate(prompts)}
    out: dict[int, list[int]] = {i: [] for i in todo}
    for step in range(STEPS):
        work = [Work(i, todo[i] or 1, True) for i in todo]
        deltas, failures = backend.step(work)
        assert not failures
        todo = dict.fromkeys(todo, 0)
        for delta in deltas:
            out[delta.seq_id].append(delta.token)
        if step == FORCED_AFTER:
            backend.force(0, forced)
            todo[0] = 1 + len(forced)
            out[0] += forced
    for seq_id in todo:
        backend.release(seq_id)
    return out[0]


@pytest.mark.parametrize("company", [0, 1], ids=["alone", "batched"])
@pytest.mark.parametrize("name", ["llama", "mlx"])
def test_forced_tokens_continue_as_a_prompt_holding_them(
    request: pytest.FixtureRequest, name: str, company: int
) -> None:
    backend: Backend = request.getfixturevalue(name)
    prompt = backend.chat_prompt([ChatMessage("user", "Think, then answer: 2+2?")])
    other = backend.chat_prompt([ChatMessage("user", "Name a colour.")])
    forced = backend.tokenize("</think>\n\n", add_special=False)
    got = run_forced(backend, [prompt] + [other] * company, forced)
    head = FORCED_AFTER + 1 + len(forced)
    assert got[FORCED_AFTER + 1 : head] == forced
    [rest] = generate(backend, [prompt + got[:head]], steps=len(got) - head)
    assert got[head:] == rest
