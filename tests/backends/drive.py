"""Driving a backend through the plugin protocol as the engine does, for backend tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import Backend, LoadRequest, SamplingParams, Work

GREEDY = SamplingParams(temperature=0.0, ignore_eos=True)
STEPS = 16


def request(path: Path, **overrides: object) -> LoadRequest:
    """A load request for the tiny model at ``path``, with ``overrides``."""
    fields: dict[str, object] = {
        "name": "tiny",
        "path": path,
        "context_length": 2048,
        "max_sequences": 4,
        "threads": 2,
        "gpu_layers": None,
        "tensor_split": None,
        "chat_template": None,
        "batch_tokens": 512,
    }
    fields.update(overrides)
    return LoadRequest(**fields)  # type: ignore[arg-type]


def generate(
    backend: Backend,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingParams = GREEDY,
    steps: int = STEPS,
    first_id: int = 0,
) -> list[list[int]]:
    """Drive the backend as the engine does: whole prompts in one step, then one token
    per sequence per step, all sequences together."""
    ids = [first_id + i for i in range(len(prompts))]
    todo = {}
    for seq_id, prompt in zip(ids, prompts, strict=True):
        todo[seq_id] = len(prompt) - backend.add(seq_id, prompt, sampling)
    out: dict[int, list[int]] = {seq_id: [] for seq_id in ids}
    while any(len(tokens) < steps for tokens in out.values()):
        work = [Work(s, todo[s] or 1, True) for s in ids if len(out[s]) < steps]
        deltas, failures = backend.step(work)
        assert not failures
        for w in work:
            todo[w.seq_id] = 0
        for delta in deltas:
            out[delta.seq_id].append(delta.token)
    for seq_id in ids:
        backend.release(seq_id)
    return [out[s] for s in ids]


def llama_tokens(llm: Any, text: str) -> list[int]:
    return list(llm.tokenize(text.encode(), add_bos=False, special=True))


def llama_greedy(llm: Any, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """Last-position logits of the prompt, then STEPS greedy tokens."""
    llm.reset()
    llm.eval(ids)
    first = np.array(llm.scores[llm.n_tokens - 1])
    logits, tokens = first, []
    for _ in range(STEPS):
        tokens.append(int(logits.argmax()))
        llm.eval(tokens[-1:])
        logits = np.array(llm.scores[llm.n_tokens - 1])
    return first, tokens
