"""Ollama's API (Open WebUI, editors' Ollama providers, the ``ollama`` client): parse
the wire into the internal request, render engine events back as NDJSON, and list the
models of models.toml as Ollama lists its own. See docs/ollama.md."""

from __future__ import annotations

from server.api.ollama import catalogue, embed, pull, routes

ROUTES = routes.ROUTES + catalogue.ROUTES + pull.ROUTES + embed.ROUTES

__all__ = ["ROUTES"]
