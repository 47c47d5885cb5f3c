"""Process settings: ``HEARTH_*`` environment variables, overridden by CLI flags.

Built once in ``main`` and passed down; nothing reads the environment after that.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    models_file: Path | None = None
    # Models to load at start; empty means the models file's default.
    load: tuple[str, ...] = ()
    cache_dir: Path | None = None
    # Requests waiting per model beyond those running; past it a request gets 429.
    max_queue: int = Field(default=64, ge=0)
    log_level: str = "info"
    pull_missing: bool = True
