"""OpenAI's Responses API (Codex, the Agents SDK): parse the wire into the internal
request, render engine events back, keep recent responses. See docs/responses.md."""

from __future__ import annotations

from server.api.responses.routes import ROUTES

__all__ = ["ROUTES"]
