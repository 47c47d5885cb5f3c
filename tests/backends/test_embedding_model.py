"""The real embedding model models.toml ships (all-MiniLM-L6-v2, BERT, as the F16 GGUF
``hearth pull`` writes) through hearth's llama.cpp backend, in the passes the engine's
scheduler plans, against reference vectors computed without llama.cpp (transformers and
torch on the float32 weights: tests/data/all_minilm_reference.json): every text's
cosine at least 0.99, the same token counts, and the code snippet each question asks
about ranked first for nearly all of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.base import Backend, LoadRequest
from server.cli.pull import default_cache_dir
from server.config import ModelConfig, load_models_file
from server.engine.embed_scheduler import EmbedJob, EmbedScheduler

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((ROOT / "tests" / "data" / "all_minilm_reference.json").read_text())
NAME = "all-minilm-l6-v2"


def _config() -> ModelConfig:
    config = load_models_file(ROOT / "models.toml", default_cache_dir()).resolve(NAME)
    if config is None:
        pytest.skip(f"models.toml has no {NAME}")
    if not config.path.is_file():
        pytest.skip(f"{config.path} is absent: hearth pull {NAME}")
    return config


@pytest.fixture(scope="module")
def minilm() -> Iterator[Backend]:
    from backends.llamacpp.backend import LlamaCppPlugin

    c = _config()
    load = LoadRequest(
        name=c.name, path=c.path, context_length=c.context_length,
        max_sequences=c.max_sequences, threads=2, gpu_layers=None, tensor_split=None,
        chat_template=None, batch_tokens=c.batch_tokens, task=c.task, pooling=c.pooling,
        normalize=c.normalize,
    )  # fmt: skip
    backend = LlamaCppPlugin().load(load)
    yield backend
    backend.close()


def embed_all(backend: Backend, texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Every text embedded in the passes the engine would run (several per pass)."""
    caps = backend.capabilities
    inputs = [backend.tokenize(t, add_special=True) for t in texts]
    scheduler = EmbedScheduler(batch_tokens=caps.context_length, max_inputs=caps.max_sequences,
                               max_waiting=1)  # fmt: skip
    scheduler.add(EmbedJob(0, tuple(len(t) for t in inputs)))
    vectors: list[Any] = [None] * len(texts)
    while pieces := scheduler.plan():
        assert len(pieces) > 1 or len(inputs) == 1 or pieces[0].index == len(inputs) - 1
        for piece, vector in zip(pieces, backend.embed([inputs[p.index] for p in pieces]),
                                 strict=True):  # fmt: skip
            vectors[piece.index] = vector
        scheduler.advance(pieces)
    return np.array(vectors), inputs


def test_the_model_loads_as_an_embedding_model(minilm: Backend) -> None:
    caps = minilm.capabilities
    assert (caps.pooling, caps.embedding_size) == ("mean", 384)
    assert caps.context_length == 512


def test_vectors_match_the_reference(minilm: Backend) -> None:
    texts = REFERENCE["texts"]
    got, inputs = embed_all(minilm, [t["text"] for t in texts])
    expected = np.array([t["embedding"] for t in texts])
    cosines = np.sum(got * expected, axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= 0.99, (texts[worst]["id"], float(cosines.min()))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert [len(t) for t in inputs] == [t["tokens"] for t in texts]


def test_each_question_finds_its_snippet(minilm: Backend) -> None:
    texts = REFERENCE["texts"]
    codes = [t["text"] for t in texts if t["kind"] == "code"]
    queries = [t["text"] for t in texts if t["kind"] == "query"]
    code_vectors, _ = embed_all(minilm, codes)
    query_vectors, _ = embed_all(minilm, queries)
    best = (query_vectors @ code_vectors.T).argmax(1)
    top1 = int((best == np.arange(len(queries))).sum())
    assert top1 >= REFERENCE["retrieval"]["top1"] - 1, top1  # the reference: 19 of 20


def test_a_text_alone_or_in_a_full_pass_gets_the_same_vector(minilm: Backend) -> None:
    texts = [t["text"] for t in REFERENCE["texts"] if t["kind"] == "query"]
    together, inputs = embed_all(minilm, texts)
    alone = np.array([minilm.embed([ids])[0] for ids in inputs[:5]])
    assert np.allclose(np.sum(together[:5] * alone, axis=1), 1.0, atol=1e-4)
