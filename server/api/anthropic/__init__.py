"""The Anthropic Messages dialect (Claude Code, the ``anthropic`` SDK): parse the wire
into the internal request, render engine events back. See docs/anthropic.md."""

from __future__ import annotations

from server.api.anthropic.routes import ROUTES

__all__ = ["ROUTES"]
