"""Embeddings and reranking through the HTTP layer with the fake backend (an input's
vector counts its bytes by value mod 8, normalised; a document's relevance is the share
of its words in the query): OpenAI's /v1/embeddings, /v1/rerank and /rerank, Ollama's
/api/embed and /api/embeddings, their validation, limits and errors in each dialect's
shape, and requests of the wrong kind for a model."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from backends.hardware import detect
from backends.registry import PluginInfo
from server.api.app import create_app
from server.api.embedding import MAX_INPUTS
from server.config import load_models_file
from server.engine.hub import ModelHub
from server.engine.metrics import Metrics
from tests.api.conftest import BASE_URL, MODELS
from tests.fakes import EMBED_SIZE, FakePlugin

EMBEDDERS = """
[models.embedder]
aliases = ["embedder:v1"]
backend = "fake"
path = "embedder.fake"
task = "embed"
matryoshka = true
batch_tokens = 64

[models.plain]
backend = "fake"
path = "plain.fake"
task = "embed"
normalize = false

[models.ranker]
backend = "fake"
path = "ranker.fake"
task = "rerank"
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "models.toml"
    path.write_text(MODELS + EMBEDDERS)
    hub = ModelHub(
        load_models_file(path, tmp_path), ["alpha"], hardware=detect(), metrics=Metrics(),
        max_waiting=4, plugins={"fake": PluginInfo("fake", FakePlugin(), None)},
    )  # fmt: skip
    with TestClient(create_app(hub), base_url=BASE_URL, raise_server_exceptions=False) as c:
        yield c


def vector_of(text: str) -> list[float]:
    counts = [0.0] * EMBED_SIZE
    for b in text.encode():
        counts[b % EMBED_SIZE] += 1
    norm = math.sqrt(sum(c * c for c in counts))
    return [c / norm for c in counts]


def embed(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/embeddings", json={"model": "embedder", **body})


def openai_error(reply: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    return error


# -- /v1/embeddings --------------------------------------------------------------------


def test_a_string_input_gets_one_vector_in_openai_shape(client: TestClient) -> None:
    reply = embed(client, input="hello world", user="u-1")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "list" and body["model"] == "embedder"
    assert body["usage"] == {"prompt_tokens": 11, "total_tokens": 11}
    (item,) = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert item["embedding"] == pytest.approx(vector_of("hello world"), abs=1e-6)


def test_many_inputs_keep_their_order_and_indexes(client: TestClient) -> None:
    texts = [f"text number {i} " + "x" * i for i in range(40)]
    body = embed(client, input=texts).json()
    assert [d["index"] for d in body["data"]] == list(range(40))
    for text, item in zip(texts, body["data"], strict=True):
        assert item["embedding"] == pytest.approx(vector_of(text), abs=1e-6)
    assert body["usage"]["prompt_tokens"] == sum(len(t) for t in texts)


def test_token_arrays_are_embedded_as_given(client: TestClient) -> None:
    one = embed(client, input=[104, 105]).json()
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == 2
    assert one["data"][0]["embedding"] == pytest.approx(vector_of("hi"), abs=1e-6)
    many = embed(client, input=[[104, 105], [1, 2, 3]]).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and many["usage"]["prompt_tokens"] == 5


def test_base64_is_little_endian_float32(client: TestClient) -> None:
    floats = embed(client, input=["abc", "de"]).json()["data"]
    encoded = embed(client, input=["abc", "de"], encoding_format="base64").json()["data"]
    for plain, packed in zip(floats, encoded, strict=True):
        raw = base64.b64decode(packed["embedding"])
        assert len(raw) == 4 * EMBED_SIZE
        assert list(struct.unpack(f"<{EMBED_SIZE}f", raw)) == pytest.approx(plain["embedding"])


def test_dimensions_shorten_a_matryoshka_models_vectors(client: TestClient) -> None:
    (item,) = embed(client, input="abcd", dimensions=3).json()["data"]
    assert len(item["embedding"]) == 3 and math.hypot(*item["embedding"]) == pytest.approx(1)
    error = openai_error(embed(client, input="abcd", dimensions=EMBED_SIZE + 1), 400)
    assert error["param"] == "dimensions" and str(EMBED_SIZE) in error["message"]
    reply = client.post("/v1/embeddings", json={"model": "plain", "input": "x", "dimensions": 2})
    error = openai_error(reply, 400, "dimensions")
    assert "matryoshka" in error["message"] and error["code"] == "unsupported_parameter"


def test_normalize_false_gives_the_raw_pooled_vector(client: TestClient) -> None:
    reply = client.post("/v1/embeddings", json={"model": "plain", "input": "aab"})
    vector = reply.json()["data"][0]["embedding"]
    assert sorted(vector, reverse=True)[:2] == [2.0, 1.0]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (None, "input"), ("", "input"), ([], "input"), (["ok", ""], "input[1]"),
        (["ok", 3], "input"), ([[1, 2], []], "input[1]"), ([[1], ["a"]], "input[1]"),
        ({"text": "x"}, "input"), ([-1], "input"),
    ],
)  # fmt: skip
def test_bad_inputs_are_400_naming_the_input(client: TestClient, value: Any, param: str) -> None:
    body = {} if value is None else {"input": value}
    openai_error(embed(client, **body), 400, param)


def test_other_fields_are_checked(client: TestClient) -> None:
    openai_error(embed(client, input="x", encoding_format="binary"), 400, "encoding_format")
    openai_error(embed(client, input="x", user=7), 400, "user")
    assert openai_error(embed(client, input="x", truncate=True), 400, "truncate")["code"] == (
        "unsupported_parameter"
    )
    openai_error(embed(client, input="x", dimensions=0), 400, "dimensions")


def test_limits_on_inputs_and_tokens(client: TestClient) -> None:
    error = openai_error(embed(client, input=["x"] * (MAX_INPUTS + 1)), 400, "input")
    assert str(MAX_INPUTS) in error["message"]
    assert embed(client, input=["x"] * MAX_INPUTS).status_code == 200
    # the fake's limit per input is min(context_length 8192, batch_tokens 64)
    error = openai_error(embed(client, input=["ok", "y" * 65]), 400, "input[1]")
    assert error["code"] == "context_length_exceeded" and "65 tokens" in error["message"]
    openai_error(embed(client, input=[[300]]), 400, "input")  # outside the vocabulary


def test_an_unknown_model_is_404(client: TestClient) -> None:
    reply = client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert openai_error(reply, 404)["code"] == "model_not_found"


# -- the wrong kind of request for a model ---------------------------------------------


def test_embeddings_from_a_generating_model_name_the_models_that_can(client: TestClient) -> None:
    reply = client.post("/v1/embeddings", json={"model": "alpha", "input": "x"})
    error = openai_error(reply, 400, "model")
    assert error["code"] == "wrong_model_task"
    assert "alpha" in error["message"] and "embedder, plain" in error["message"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/responses", {"input": "hi"}),
        ("/infill", {"input_prefix": "a", "input_suffix": "b"}),
    ],
)
def test_generation_on_an_embedding_model_is_400(
    client: TestClient, route: str, body: dict[str, Any]
) -> None:
    error = openai_error(client.post(route, json={"model": "embedder", **body}), 400, "model")
    assert error["code"] == "wrong_model_task" and "alpha" in error["message"]


def test_wrong_kind_in_the_anthropic_and_ollama_shapes(client: TestClient) -> None:
    messages = [{"role": "user", "content": "hi"}]
    reply = client.post("/v1/messages", json={"model": "embedder", "max_tokens": 5,
                                              "messages": messages})  # fmt: skip
    assert reply.status_code == 400 and reply.json()["type"] == "error"
    assert "embedder" in reply.json()["error"]["message"]
    reply = client.post("/api/chat", json={"model": "embedder", "messages": messages})
    assert reply.status_code == 400 and "cannot generate text" in reply.json()["error"]
    reply = client.post("/api/embed", json={"model": "alpha", "input": "x"})
    assert reply.status_code == 400 and set(reply.json()) == {"error"}
    assert "embedder" in reply.json()["error"]


def test_a_reranker_does_not_embed_nor_an_embedder_rerank(client: TestClient) -> None:
    reply = client.post("/v1/embeddings", json={"model": "ranker", "input": "x"})
    assert "ranker" in openai_error(reply, 400, "model")["message"]
    reply = client.post("/v1/rerank", json={"model": "embedder", "query": "q", "documents": ["d"]})
    assert "models that can: ranker" in openai_error(reply, 400, "model")["message"]


# -- /v1/rerank and /rerank ------------------------------------------------------------

DOCS = ["red apples", "blue sky over the sea", "red sky"]


@pytest.mark.parametrize("route", ["/v1/rerank", "/rerank"])
def test_rerank_sorts_documents_by_relevance(client: TestClient, route: str) -> None:
    reply = client.post(route, json={"model": "ranker", "query": "red sky at night",
                                     "documents": DOCS})  # fmt: skip
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "ranker" and body["object"] == "list"
    assert [r["index"] for r in body["results"]] == [2, 0, 1]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([1.0, 0.5, 0.2])
    assert all("document" not in r for r in body["results"])
    # each pair is the query, a separator and the document
    assert body["usage"]["prompt_tokens"] == sum(len("red sky at night") + 1 + len(d) for d in DOCS)


def test_rerank_top_n_and_documents_returned(client: TestClient) -> None:
    docs = [{"text": d} for d in DOCS]
    body = client.post("/v1/rerank", json={
        "model": "ranker", "query": "red sky", "documents": docs, "top_n": 2,
        "return_documents": True,
    }).json()  # fmt: skip
    assert [(r["index"], r["document"]) for r in body["results"]] == [
        (2, {"text": "red sky"}), (0, {"text": "red apples"}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"documents": DOCS}, "query"), ({"query": "", "documents": DOCS}, "query"),
        ({"query": "q"}, "documents"), ({"query": "q", "documents": []}, "documents"),
        ({"query": "q", "documents": ["a", 1]}, "documents[1]"),
        ({"query": "q", "documents": [{"txt": "a"}]}, "documents[0]"),
        ({"query": "q", "documents": ["a", ""]}, "documents[1]"),
        ({"query": "q", "documents": DOCS, "top_n": 0}, "top_n"),
        ({"query": "q", "documents": DOCS, "return_documents": "yes"}, "return_documents"),
        ({"query": "q", "documents": DOCS, "rank_fields": ["x"]}, "rank_fields"),
    ],
)  # fmt: skip
def test_bad_rerank_requests_are_400(client: TestClient, body: dict[str, Any], param: str) -> None:
    openai_error(client.post("/v1/rerank", json={"model": "ranker", **body}), 400, param)


def test_a_long_document_is_refused_unless_truncation_is_asked(client: TestClient) -> None:
    body = {"model": "ranker", "query": "q", "documents": ["short", "x" * 600]}
    error = openai_error(client.post("/v1/rerank", json=body), 400, "documents[1]")
    assert error["code"] == "context_length_exceeded"
    reply = client.post("/v1/rerank", json={**body, "truncate": True})
    assert reply.status_code == 200 and len(reply.json()["results"]) == 2


# -- Ollama ----------------------------------------------------------------------------


def test_ollama_embed_takes_a_string_or_a_list(client: TestClient) -> None:
    body = client.post("/api/embed", json={"model": "embedder:v1", "input": ["ab", "c"]}).json()
    assert body["model"] == "embedder:v1"
    assert body["embeddings"][0] == pytest.approx(vector_of("ab"), abs=1e-6)
    assert body["prompt_eval_count"] == 3
    assert body["total_duration"] >= body["load_duration"] >= 0
    one = client.post("/api/embed", json={"model": "embedder", "input": "ab"}).json()
    assert len(one["embeddings"]) == 1


def test_ollama_truncates_by_default_and_refuses_when_told_not_to(client: TestClient) -> None:
    long = {"model": "embedder", "input": "z" * 100}
    assert client.post("/api/embed", json=long).json()["prompt_eval_count"] == 64
    reply = client.post("/api/embed", json={**long, "options": {"num_ctx": 10}})
    assert reply.json()["prompt_eval_count"] == 10
    reply = client.post("/api/embed", json={**long, "truncate": False})
    assert reply.status_code == 400 and set(reply.json()) == {"error"}
    assert "100 tokens" in reply.json()["error"]


def test_ollama_embed_fields(client: TestClient) -> None:
    short = client.post("/api/embed", json={"model": "embedder", "input": "ab", "dimensions": 2})
    assert len(short.json()["embeddings"][0]) == 2
    reply = client.post("/api/embed", json={"model": "embedder", "input": "a", "suffix": "b"})
    assert reply.status_code == 400 and "suffix" in reply.json()["error"]
    reply = client.post("/api/embed", json={"model": "plain", "input": "a", "dimensions": 2})
    assert reply.status_code == 400 and "matryoshka" in reply.json()["error"]
    reply = client.post("/api/embed", json={"model": "embedder", "input": "a",
                                            "options": {"mirostat": 2}})  # fmt: skip
    assert reply.status_code == 400
    reply = client.post("/api/embed", json={"model": "nope", "input": "a"})
    assert reply.status_code == 404 and "nope" in reply.json()["error"]


def test_ollama_empty_input_only_loads_the_model(client: TestClient) -> None:
    for empty in ("", []):
        reply = client.post("/api/embed", json={"model": "embedder", "input": empty})
        assert reply.status_code == 200 and reply.json()["embeddings"] == []
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["embedder"]["state"] in ("ready", "idle")


def test_ollama_legacy_embeddings(client: TestClient) -> None:
    reply = client.post("/api/embeddings", json={"model": "embedder", "prompt": "hello"})
    assert reply.json() == {"embedding": pytest.approx(vector_of("hello"), abs=1e-6)}
    reply = client.post("/api/embeddings", json={"model": "embedder", "prompt": ""})
    assert reply.json() == {"embedding": []}
    reply = client.post("/api/embeddings", json={"model": "embedder", "input": "x"})
    assert reply.status_code == 400


def test_ollama_show_lists_an_embedding_capability(client: TestClient) -> None:
    reply = client.post("/api/show", json={"model": "embedder"})
    assert reply.json()["capabilities"] == ["embedding"]


# -- models and metrics ----------------------------------------------------------------


def test_models_describe_the_task_pooling_and_vector_length(client: TestClient) -> None:
    embed(client, input="x")
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["alpha"]["task"] == "generate" and models["alpha"]["pooling"] is None
    embedder = models["embedder"]
    assert embedder["task"] == "embed" and embedder["pooling"] == "mean"
    assert embedder["normalize"] is True and embedder["matryoshka"] is True
    assert embedder["embedding_length"] == EMBED_SIZE and embedder["max_sequences"] == 64
    assert models["ranker"]["task"] == "rerank" and models["ranker"]["pooling"] == "rank"
    assert models["plain"]["normalize"] is False and models["plain"]["embedding_length"] is None


def test_metrics_count_embedding_inputs_and_tokens(client: TestClient) -> None:
    embed(client, input=["abc", "de"])
    text = client.get("/metrics").text
    assert 'hearth_embedding_inputs_total{model="embedder"} 2' in text
    assert 'hearth_embedding_tokens_total{model="embedder"} 5' in text


def test_an_embedding_model_in_its_own_runner_process(tmp_path: Path) -> None:
    """``hearth serve``'s isolation: the engine in a runner process is an embedding
    engine, and its vectors cross the process boundary whole."""
    path = tmp_path / "models.toml"
    path.write_text(MODELS + EMBEDDERS)
    hub = ModelHub(
        load_models_file(path, tmp_path), ["embedder"], hardware=detect(), metrics=Metrics(),
        max_waiting=4, plugins={"fake": PluginInfo("fake", FakePlugin(), None)},
        isolation="process",
    )  # fmt: skip
    with TestClient(create_app(hub), base_url=BASE_URL, raise_server_exceptions=False) as c:
        body = embed(c, input=["ab", "cde"]).json()
        assert [d["embedding"] for d in body["data"]] == [
            pytest.approx(vector_of("ab"), abs=1e-6), pytest.approx(vector_of("cde"), abs=1e-6),
        ]  # fmt: skip
        (model,) = [m for m in c.get("/v1/models").json()["data"] if m["id"] == "embedder"]
        assert model["runner_pid"] and model["embedding_length"] == EMBED_SIZE
