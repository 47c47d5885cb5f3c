"""``POST /v1/rerank`` and ``POST /rerank``: documents ranked by relevance to a query, in
the shape llama-server, Jina and Cohere clients send, for a model with
``task = "rerank"``.

``query``; ``documents`` as strings or ``{"text": ...}`` objects; ``top_n`` (all by
default); ``return_documents`` (each result's ``document.text``, off by default);
``truncate`` (a document whose pair with the query is over the model's limit is cut to
it, not refused). Results come sorted by ``relevance_score`` (0 to 1), each with the
``index`` of its document. Errors have OpenAI's shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from backends.base import RERANK
from server.api import embedding as e
from server.api import fields as f
from server.api.openai.schemas import model_name
from server.config import ModelConfig
from server.engine.requests import Embedded, EmbeddingRequest
from server.errors import InvalidRequest

FIELDS = {"model", "query", "documents", "top_n", "return_documents", "truncate"}


@dataclass(frozen=True, slots=True)
class ParsedRerank:
    embedding: EmbeddingRequest
    top_n: int
    return_documents: bool


def parse(body: Any, config: ModelConfig) -> ParsedRerank:
    fields = e.known_fields(body, FIELDS)
    query = fields.get("query")
    if not isinstance(query, str) or not query:
        raise InvalidRequest("'query' must be a non-empty string", param="query")
    documents = _documents(fields.get("documents"))
    request = EmbeddingRequest(
        request_id=f.request_id(),
        model=config.name,
        inputs=documents,
        arrival=time.monotonic(),
        query=query,
        truncate=f.boolean(fields, "truncate"),
        param="documents",
    )
    top_n = f.positive_int(fields, "top_n") or len(documents)
    return ParsedRerank(request, top_n, f.boolean(fields, "return_documents"))


def _documents(value: Any) -> tuple[str, ...]:
    """Strings, or ``{"text": ...}`` objects (Cohere's and Jina's), none empty."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'documents' must be a non-empty array", param="documents")
    texts = []
    for i, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) and set(item) == {"text"} else item
        if not isinstance(text, str):
            raise InvalidRequest(f"'documents[{i}]' must be a string or {{\"text\": string}}",
                                 param=f"documents[{i}]")  # fmt: skip
        texts.append(text)
    return e.texts(texts, "documents")


def render(parsed: ParsedRerank, result: Embedded) -> dict[str, Any]:
    documents = parsed.embedding.inputs
    scores = [vector[0] for vector in result.vectors]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: parsed.top_n]
    results = []
    for i in order:
        entry: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if parsed.return_documents:
            entry["document"] = {"text": documents[i]}
        results.append(entry)
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"id": parsed.embedding.request_id, "object": "list",
            "model": parsed.embedding.model, "results": results, "usage": usage}  # fmt: skip


rerank = e.endpoint(RERANK, model_name, parse, render)


ROUTES = [
    Route("/v1/rerank", rerank, methods=["POST"]),
    Route("/rerank", rerank, methods=["POST"]),
]
