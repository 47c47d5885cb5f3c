"""The llama.cpp backend as a reranker, on a reranker-shaped GGUF made from the shipped
BERT embedding model (tests/rerank_gguf.py: its weights and tokenizer, rank pooling, a
classification head of known random weights): the (query, document) pair in BERT's
form, the score as the sigmoid of the head over the [CLS] hidden state (which the same
model pooled by ``cls`` gives), many pairs in one pass, and the rerank template a GGUF
may carry. No real reranker ships, so these check the path, not the ranking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backends.base import Backend, TaskUnsupported
from tests.backends.drive import request as load_request
from tests.backends.test_embedding_model import _config
from tests.rerank_gguf import Head, build_reranker

CLS, SEP = 101, 102  # BERT's [CLS] and [SEP]: llama.cpp's BOS and EOS for this vocabulary
QUERY = "how do I reverse a list in python"
DOCS = ["xs[::-1] returns the list reversed", "SELECT name FROM users", "a [SEP] b", "list"]


def load(path: Path, **overrides: object) -> Backend:
    from backends.llamacpp.backend import LlamaCppPlugin

    fields: dict[str, object] = {"context_length": 512, "max_sequences": 8, "batch_tokens": 512}
    return LlamaCppPlugin().load(load_request(path, **(fields | overrides)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Head]:
    path = tmp_path_factory.mktemp("reranker") / "reranker.gguf"
    return path, build_reranker(_config().path, path)


@pytest.fixture(scope="module")
def reranker(built: tuple[Path, Head]) -> Iterator[Backend]:
    backend = load(built[0], task="rerank", pooling="rank")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def cls_pooled() -> Iterator[Backend]:
    backend = load(_config().path, task="embed", pooling="cls", normalize=False)
    yield backend
    backend.close()


def plain(backend: Backend, text: str) -> list[int]:
    return backend.tokenize(text, add_special=False)


def test_a_pair_is_cls_query_sep_document_sep(reranker: Backend) -> None:
    caps = reranker.capabilities
    assert (caps.pooling, caps.embedding_size) == ("rank", 1)
    pair = reranker.rerank_prompt(QUERY, DOCS[0])
    assert pair == [CLS, *plain(reranker, QUERY), SEP, *plain(reranker, DOCS[0]), SEP]
    # a document's "[SEP]" is text, never the token
    assert reranker.rerank_prompt("q", DOCS[2]).count(SEP) == 2


def test_scores_are_the_heads_probability_over_the_cls_state(
    reranker: Backend, cls_pooled: Backend, built: tuple[Path, Head]
) -> None:
    head = built[1]
    pairs = [reranker.rerank_prompt(QUERY, d) for d in DOCS] * 4  # 16 pairs, two passes
    scores = reranker.embed(pairs[:8]) + reranker.embed(pairs[8:])
    hidden = cls_pooled.embed(pairs[:8]) + cls_pooled.embed(pairs[8:])
    expected = [1 / (1 + np.exp(-head.logit(np.array(h)))) for h in hidden]
    assert [s[0] for s in scores] == pytest.approx(expected, abs=1e-4)
    assert all(0 < s[0] < 1 for s in scores)
    assert scores[0] == pytest.approx(scores[4], abs=1e-4)  # the same pair, another slot


def test_a_rerank_template_places_the_query_and_document(tmp_path: Path, reranker: Backend) -> None:
    path = tmp_path / "templated.gguf"
    build_reranker(_config().path, path, template="[CLS]q: {query}[SEP]d: {document}[SEP]")
    templated = load(path, task="rerank", pooling="rank")
    try:
        pair = templated.rerank_prompt("[SEP] x", "doc")
        query = templated.tokenize("[SEP] x", add_special=False)  # parses "[SEP]"
        assert query[0] == SEP  # what the template's own text gets, and the query's not:
        assert pair.count(SEP) == 2  # the template's two
        prefix = [CLS, *plain(templated, "q:")]
        assert pair[: len(prefix)] == prefix and pair[-1] == SEP
        assert pair != reranker.rerank_prompt("[SEP] x", "doc")
    finally:
        templated.close()


def test_an_embedding_model_does_not_rerank(cls_pooled: Backend) -> None:
    with pytest.raises(TaskUnsupported):
        cls_pooled.rerank_prompt("q", "d")
