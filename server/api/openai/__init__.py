"""The OpenAI dialect (and llama-server's /infill and /tokenize beside it): parse the
wire into internal requests, render engine events back."""

from __future__ import annotations

from server.api.openai import infill, routes

ROUTES = routes.ROUTES + infill.ROUTES
