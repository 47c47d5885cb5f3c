"""Embeddings on a real server: the shipped embedding model (all-MiniLM-L6-v2) through
the ``openai`` client (base64, which the client asks for by default, and float),
LangChain's ``OpenAIEmbeddings`` and the ``ollama`` client, checked against reference
vectors computed without llama.cpp; the retrieval check (each question finds its code
snippet); concurrent requests sharing passes; the default chat model loaded a second
time as an embedding model (mean pooling); reranking with a reranker-shaped model
(tests/rerank_gguf.py); and requests of the wrong kind for a model. Each model in its
own runner."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import openai
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve
from tests.rerank_gguf import Head, build_reranker

pytestmark = pytest.mark.e2e

REFERENCE = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "all_minilm_reference.json").read_text()
)
MODELS = load_models_file(MODELS_FILE, default_cache_dir()).models
EMBEDDER = "all-minilm-l6-v2"
HEAD: list[Head] = []  # the reranker's classification head, once built


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if EMBEDDER not in MODELS or not MODELS[EMBEDDER].path.is_file():
        pytest.skip(f"the embedding model is not pulled: hearth pull {EMBEDDER}")
    folder = tmp_path_factory.mktemp("embeddings")
    minilm, qwen = MODELS[EMBEDDER].path, MODELS["qwen2.5-coder-0.5b"].path
    HEAD.append(build_reranker(minilm, folder / "reranker.gguf"))
    (folder / "models.toml").write_text(
        f'[models.minilm]\naliases = ["all-minilm"]\npath = "{minilm}"\ntask = "embed"\n'
        f"context_length = 512\n"
        f'[models.qwen]\npath = "{qwen}"\ncontext_length = 4096\nmax_sequences = 4\n'
        f'[models.qwen-embed]\npath = "{qwen}"\ntask = "embed"\npooling = "mean"\n'
        f"context_length = 1024\nbatch_tokens = 1024\nmax_sequences = 16\n"
        f'[models.ranker]\npath = "{folder / "reranker.gguf"}"\ntask = "rerank"\n'
        f'[models.minilm-cls]\npath = "{minilm}"\ntask = "embed"\npooling = "cls"\n'
        f"normalize = false\n"
    )
    with serve(folder / "server.log", ("minilm", "qwen"), folder / "models.toml") as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as oa:
        yield oa


def cosines(got: list[list[float]], items: list[dict[str, Any]]) -> np.ndarray:
    a, b = np.array(got), np.array([t["embedding"] for t in items])
    out: np.ndarray = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return out


def test_the_openai_client_gets_the_reference_vectors(client: openai.OpenAI) -> None:
    items = REFERENCE["texts"]
    texts = [t["text"] for t in items]
    packed = client.embeddings.create(model="minilm", input=texts)  # base64 on the wire
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    for reply in (packed, floats):
        assert [d.index for d in reply.data] == list(range(len(texts)))
        assert reply.usage.prompt_tokens == sum(t["tokens"] for t in items)
        assert cosines([d.embedding for d in reply.data], items).min() >= 0.99
    assert np.allclose([d.embedding for d in packed.data], [d.embedding for d in floats.data])


def test_each_question_finds_its_snippet(client: openai.OpenAI) -> None:
    codes = [t["text"] for t in REFERENCE["texts"] if t["kind"] == "code"]
    queries = [t["text"] for t in REFERENCE["texts"] if t["kind"] == "query"]
    code = np.array(
        [d.embedding for d in client.embeddings.create(model="minilm", input=codes).data]
    )
    asked = client.embeddings.create(model="minilm", input=queries).data
    best = (np.array([d.embedding for d in asked]) @ code.T).argmax(1)
    assert int((best == np.arange(len(queries))).sum()) >= 18


def test_langchains_openai_embeddings(base: str) -> None:
    """LangChain's ``OpenAIEmbeddings`` as a retrieval app sets it up for a server that is
    not OpenAI: ``check_embedding_ctx_length=False``, so it sends text, not tiktoken's
    token ids (which mean nothing to another model's vocabulary)."""
    embeddings_module = pytest.importorskip("langchain_openai")
    items = REFERENCE["texts"][:6]
    lc = embeddings_module.OpenAIEmbeddings(
        model="all-minilm", base_url=f"{base}/v1", api_key="unused",
        check_embedding_ctx_length=False, chunk_size=4,
    )  # fmt: skip
    documents = lc.embed_documents([t["text"] for t in items])
    assert cosines(documents, items).min() >= 0.99
    query = lc.embed_query(items[0]["text"])
    assert cosines([query], items[:1]).min() >= 0.99


def test_concurrent_requests_share_passes(base: str, client: openai.OpenAI) -> None:
    items = REFERENCE["texts"]

    def one(i: int) -> list[list[float]]:
        chunk = items[i::8]
        reply = client.embeddings.create(model="minilm", input=[t["text"] for t in chunk])
        return [d.embedding for d in reply.data]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for i, got in enumerate(results):
        assert cosines(got, items[i::8]).min() >= 0.99
    metrics = httpx.get(f"{base}/metrics").text
    widest = next(line for line in metrics.splitlines()
                  if line.startswith('hearth_step_sequences_max{model="minilm"}'))  # fmt: skip
    assert float(widest.split()[-1]) > 6  # more inputs in a pass than any one request had


def test_the_ollama_client(base: str) -> None:
    items = REFERENCE["texts"][:4]
    with ollama.Client(host=base, timeout=120) as olla:
        reply = olla.embed(model="all-minilm", input=[t["text"] for t in items])
        assert reply.prompt_eval_count == sum(t["tokens"] for t in items)
        assert cosines([list(v) for v in reply.embeddings], items).min() >= 0.99
        legacy = olla.embeddings(model="all-minilm", prompt=items[0]["text"])
        assert cosines([list(legacy.embedding)], items[:1]).min() >= 0.99
        with pytest.raises(ollama.ResponseError) as info:
            olla.chat("all-minilm", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 400 and "qwen" in info.value.error


def test_a_chat_model_loaded_to_embed_pools_its_hidden_states(client: openai.OpenAI) -> None:
    texts = ["def add(a, b): return a + b", "SELECT 1;", "hello"] * 6
    reply = client.embeddings.create(model="qwen-embed", input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (18, 896)  # Qwen2.5-0.5B's hidden size
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vectors[0], vectors[3], atol=1e-4)  # the same text, another pass
    assert not np.allclose(vectors[0], vectors[1], atol=1e-2)


def test_requests_of_the_wrong_kind(client: openai.OpenAI, base: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "wrong_model_task" and "qwen" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="qwen", input="x")
    assert "minilm, qwen-embed" in str(info.value)
    reply = httpx.post(f"{base}/v1/rerank", json={"model": "minilm", "query": "q",
                                                  "documents": ["d"]})  # fmt: skip
    assert reply.status_code == 400 and "models that can: ranker" in reply.text


@pytest.mark.parametrize("route", ["/v1/rerank", "/rerank"])
def test_rerank_scores_are_the_rerankers_head_over_each_pair(base: str, route: str) -> None:
    """The reranker is tests/rerank_gguf.py's (a random head on all-MiniLM): its scores
    are checked against the head applied to the [CLS] state of each (query, document)
    pair, which the server gives as a cls-pooled embedding of the pair's tokens."""
    query, docs = "reverse a list", ["xs[::-1] reverses xs", "SELECT 1", "list.reverse()"]
    reply = httpx.post(f"{base}{route}", json={"model": "ranker", "query": query,
                                               "documents": docs, "top_n": 2,
                                               "return_documents": True}, timeout=60)  # fmt: skip
    assert reply.status_code == 200, reply.text
    body = reply.json()
    results = body["results"]
    assert len(results) == 2 and results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert all(docs[r["index"]] == r["document"]["text"] for r in results)

    def tokens(text: str) -> list[int]:
        got = httpx.post(f"{base}/tokenize", json={"model": "minilm", "content": text})
        ids: list[int] = got.json()["tokens"]
        return ids

    pairs = [[101, *tokens(query), 102, *tokens(d), 102] for d in docs]
    assert body["usage"]["prompt_tokens"] == sum(len(p) for p in pairs)
    hidden = httpx.post(f"{base}/v1/embeddings", json={"model": "minilm-cls", "input": pairs})
    states = [np.array(d["embedding"]) for d in hidden.json()["data"]]
    expected = [1 / (1 + np.exp(-HEAD[0].logit(h))) for h in states]
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-3)
    assert [r["index"] for r in results] == list(np.argsort(expected)[::-1][:2])


def test_models_lists_tasks_and_runners(base: str) -> None:
    models = {m["id"]: m for m in httpx.get(f"{base}/v1/models").json()["data"]}
    minilm, qwen = models["minilm"], models["qwen"]
    assert (minilm["task"], minilm["pooling"], minilm["embedding_length"]) == ("embed", "mean", 384)
    assert qwen["task"] == "generate" and minilm["runner_pid"] != qwen["runner_pid"]
