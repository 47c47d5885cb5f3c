"""Process settings: ``HEARTH_*`` environment variables, overridden by CLI flags.

Built once in ``main`` and passed down; nothing reads the environment after that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A plain comma list in the environment (``a,b``), not the JSON pydantic-settings expects.
CommaList = Annotated[tuple[str, ...], NoDecode]


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
    # On SIGTERM, how long running streams may finish before they are cut.
    drain_seconds: float = Field(default=30.0, ge=0)
    # On SIGTERM, how long readiness is 503 while requests are still served, before the
    # drain: a balancer polling /health/ready takes the replica out in that time.
    drain_notice_seconds: float = Field(default=0.0, ge=0)
    # A request ends (504, or a final SSE error event) and its sequence is freed after
    # this long in all, or when it has waited this long to be admitted (queued).
    request_timeout: float = Field(default=1800.0, gt=0)
    first_token_timeout: float = Field(default=300.0, gt=0)
    # Access control (server/api/security.py, docs/security.md). Keys stay out of repr.
    api_keys: CommaList = Field(default=(), repr=False)
    api_key_file: Path | None = None
    allowed_hosts: CommaList = ()
    cors_origins: CommaList = ()
    insecure_no_auth: bool = False
    # "process": each model's engine in a runner process of its own, so a native crash
    # fails that model's requests only; "thread": in this process (tests, debugging).
    engine_isolation: Literal["process", "thread"] = "process"
    # Bytes all loaded models may use together ("48GB", "40GiB"); unset: the machine's
    # memory less 2 GiB. Models past it unload idle ones, least recently used first.
    memory_budget: str | None = None
    # How long an idle model loaded on demand stays ("5m", 0, -1 for ever), unless
    # models.toml gives it a keep_alive; models loaded at start stay.
    keep_alive: str = "5m"
    # Prompt state saved beyond the live KV cache, found again by content: a RAM tier and
    # a disk tier (docs/prompt-cache.md); "0" turns a tier off. The folder defaults to
    # prompt-cache beside the model cache (~/.cache/hearth/prompt-cache on Linux).
    prompt_cache_ram: str = "1GiB"
    prompt_cache_disk: str = "8GiB"
    prompt_cache_dir: Path | None = None
    # Backend plugins besides the installed ones: name=module:Class, comma-separated.
    plugins: CommaList = ()
    # A runner whose engine has not answered a ping this long (a step that hangs) is
    # killed and started again.
    engine_hang_seconds: float = Field(default=120.0, gt=0)

    @field_validator("api_keys", "allowed_hosts", "cors_origins", "plugins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
