"""The llama.cpp backend as an embedding model, on the tiny random Qwen2 GGUF loaded with
``task = "embed"``: llama.cpp pools a decoder's hidden states by mean or last token. Many
inputs in one forward pass give the vectors each gives alone, and the same as
llama-cpp-python's own ``Llama.embed``; shapes, normalisation, limits, and what a model
loaded for another task refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.base import Backend, ModelLoadError, TaskUnsupported
from tests.backends.drive import request as load_request
from tests.backends.test_tiny_gguf import reference_hidden
from tests.solo_llama import solo_llama
from tests.tiny_model import make_weights

TEXTS = [
    "def add(a, b): return a + b",
    "SELECT name FROM users WHERE id = 1;",
    "hello",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    'fn main() { println!("hi"); }',
]


def load(path: Path, **overrides: object) -> Backend:
    from backends.llamacpp.backend import LlamaCppPlugin

    return LlamaCppPlugin().load(load_request(path, **overrides))


@pytest.fixture(scope="module")
def embedder(tiny_gguf: Path) -> Iterator[Backend]:
    backend = load(tiny_gguf, task="embed", pooling="mean", normalize=True, max_sequences=8,
                   batch_tokens=256)  # fmt: skip
    yield backend
    backend.close()


def tokens(backend: Backend, text: str) -> list[int]:
    return backend.tokenize(text, add_special=True)


def test_capabilities_of_an_embedding_model(embedder: Backend) -> None:
    caps = embedder.capabilities
    assert caps.pooling == "mean" and caps.embedding_size > 0
    assert caps.context_length == 256  # min(context 2048, its batch of 256 tokens)
    assert caps.max_sequences == 8


def test_a_batch_gives_each_input_its_own_vector(embedder: Backend) -> None:
    inputs = [tokens(embedder, t) for t in TEXTS]
    together = np.array(embedder.embed(inputs))
    assert together.shape == (len(TEXTS), embedder.capabilities.embedding_size)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.array([embedder.embed([t])[0] for t in inputs])
    assert np.allclose(np.sum(together * alone, axis=1), 1.0, atol=1e-4)
    similarity = together @ together.T
    assert np.all(similarity[~np.eye(len(TEXTS), dtype=bool)] < 0.9999)  # all differ


def test_the_kv_cache_is_left_empty(embedder: Backend) -> None:
    first = embedder.embed([tokens(embedder, "again")])
    assert embedder.kv_cache_used() == 0
    assert np.allclose(embedder.embed([tokens(embedder, "again")]), first, atol=1e-6)


def test_vectors_match_llama_cpp_pythons_own_embed(embedder: Backend, tiny_gguf: Path) -> None:
    llm: Any = solo_llama(model_path=str(tiny_gguf), embedding=True, pooling_type=1, n_ctx=512,
                          n_batch=512, n_ubatch=512, verbose=False)  # fmt: skip
    try:
        ours = np.array(embedder.embed([tokens(embedder, t) for t in TEXTS]))
        theirs = np.array([llm.embed(t, normalize=True) for t in TEXTS])
    finally:
        llm.close()
    assert np.allclose(np.sum(ours * theirs, axis=1), 1.0, atol=1e-4)


def test_mean_and_last_pooling_match_a_numpy_forward_pass(
    embedder: Backend, tiny_gguf: Path
) -> None:
    """Independent of llama.cpp: the tiny model's hidden states in NumPy (float64),
    averaged (mean) or the last one (last)."""
    weights = {name: t.astype(np.float64) for name, t in make_weights().items()}
    last = load(tiny_gguf, task="embed", pooling="last", normalize=True, batch_tokens=128)
    try:
        for text in TEXTS[:3]:
            ids = tokens(embedder, text)
            hidden = reference_hidden(weights, ids)
            for backend, expected in ((embedder, hidden.mean(0)), (last, hidden[-1])):
                (got,) = backend.embed([ids])
                cosine = np.dot(got, expected) / np.linalg.norm(expected)
                assert cosine > 0.9999, (text, backend.capabilities.pooling, cosine)
    finally:
        last.close()


def test_last_token_pooling_and_raw_vectors(tiny_gguf: Path, embedder: Backend) -> None:
    backend = load(tiny_gguf, task="embed", pooling="last", normalize=False, batch_tokens=128)
    try:
        assert backend.capabilities.pooling == "last"
        ids = tokens(backend, TEXTS[0])
        (raw,) = backend.embed([ids])
        assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3  # not normalised
        (mean,) = embedder.embed([ids])
        cosine = np.dot(raw, mean) / np.linalg.norm(raw)
        assert cosine < 0.9999  # a different pooling gives a different vector
    finally:
        backend.close()


def test_a_full_batch_of_many_short_inputs(embedder: Backend) -> None:
    inputs = [tokens(embedder, f"item {i}") for i in range(8)]
    assert len(embedder.embed(inputs)) == 8


def test_a_decoder_without_pooling_metadata_needs_pooling_set(tiny_gguf: Path) -> None:
    with pytest.raises(ModelLoadError, match=r'pooling = "mean", "cls" or "last"'):
        load(tiny_gguf, task="embed")


def test_a_model_without_a_rank_head_is_not_a_reranker(tiny_gguf: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a reranker"):
        load(tiny_gguf, task="rerank", pooling="rank")


def test_what_each_task_refuses(embedder: Backend, tiny_gguf: Path) -> None:
    with pytest.raises(TaskUnsupported, match="not a reranker"):
        embedder.rerank_prompt("q", "d")
    generator = load(tiny_gguf)
    try:
        assert generator.capabilities.pooling is None
        with pytest.raises(TaskUnsupported, match='task = "embed"'):
            generator.embed([[1, 2]])
    finally:
        generator.close()
