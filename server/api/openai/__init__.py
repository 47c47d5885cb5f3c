"""The OpenAI dialect (and llama-server's /infill, /tokenize and /rerank beside it):
parse the wire into internal requests, render engine events back."""

from __future__ import annotations

from server.api.openai import embeddings, infill, rerank, routes

ROUTES = routes.ROUTES + infill.ROUTES + embeddings.ROUTES + rerank.ROUTES
