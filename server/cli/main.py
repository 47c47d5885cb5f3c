"""The ``hearth`` command: serve, models, pull, info, bench, service, rpc-worker."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from server import __version__
from server.api.limits import MAX_HEAD_BYTES
from server.config import (
    DEFAULT_MODELS_FILE,
    ConfigError,
    ModelConfig,
    ModelsFile,
    load_models_file,
    parse_duration,
    parse_size,
)
from server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        result: int = args.func(args, settings)
        return result
    except ConfigError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="A local LLM inference server.")
    parser.add_argument("--version", action="version", version=f"hearth {__version__}")
    parser.add_argument("--models-file", type=Path, help="models.toml (env HEARTH_MODELS_FILE)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; env HEARTH_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8080; env HEARTH_PORT)")
    serve.add_argument(
        "--model", action="append", dest="load", metavar="NAME",
        help="model to load (repeatable; default: the models file's default)",
    )  # fmt: skip
    serve.add_argument("--no-pull", action="store_true", help="do not download missing models")
    serve.add_argument(
        "--api-key-file", type=Path, metavar="PATH",
        help="API keys, one a line, mode 0600 (env HEARTH_API_KEY_FILE; see docs/security.md)",
    )  # fmt: skip
    serve.add_argument(
        "--insecure-no-auth", action="store_true",
        help="allow a non-loopback --host without API keys (env HEARTH_INSECURE_NO_AUTH=1)",
    )  # fmt: skip
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="list the models in the models file")
    models.set_defaults(func=_models)

    pull = sub.add_parser("pull", help="download a model into the cache")
    pull.add_argument("names", nargs="*", metavar="NAME", help="models (default: the default)")
    pull.set_defaults(func=_pull)

    info = sub.add_parser("info", help="hardware, backends, and why each model gets its backend")
    info.add_argument("name", nargs="?", metavar="NAME", help="also show this model's GPU plan")
    info.add_argument(
        "--gpu-memory", metavar="SIZE",
        help="plan NAME for a hypothetical GPU of this size, e.g. 24GB or 24GiB",
    )  # fmt: skip
    info.set_defaults(func=_info)

    ps = sub.add_parser("ps", help="the models a running server has loaded")
    from server.cli import ps as ps_module

    ps_module.add_arguments(ps)
    ps.set_defaults(func=ps_module.run)

    cache = sub.add_parser("cache", help="the prompt cache on disk: ls or clear")
    from server.cli import cache as cache_module

    cache_module.add_arguments(cache)
    cache.set_defaults(func=cache_module.run)

    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible server")
    from server.cli.bench import run as bench_module

    bench_module.add_arguments(bench)
    bench.set_defaults(func=lambda args, _settings: bench_module.run(args))

    service = sub.add_parser("service", help="run hearth as a systemd or launchd service")
    from server.cli import service as service_module

    service_module.add_arguments(service)
    service.set_defaults(func=service_module.run)

    worker = sub.add_parser(
        "rpc-worker", help="lend this machine to a model split over machines (llama.cpp RPC)"
    )
    from server.cli import rpc_worker

    rpc_worker.add_arguments(worker)
    worker.set_defaults(func=rpc_worker.run)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for key in ("host", "port", "models_file", "load", "api_key_file"):
        value = getattr(args, key, None)
        if value:
            overrides[key] = tuple(value) if key == "load" else value
    if getattr(args, "no_pull", False):
        overrides["pull_missing"] = False
    if getattr(args, "insecure_no_auth", False):
        overrides["insecure_no_auth"] = True
    return Settings(**overrides)


def prompt_cache(settings: Settings) -> tuple[Path | None, int, int]:
    """The prompt cache's folder and its RAM and disk bounds, from the settings."""
    from server.cli.pull import default_cache_dir

    folder = settings.prompt_cache_dir or (
        (settings.cache_dir or default_cache_dir()).parent / "prompt-cache"
    )
    return folder, _bytes(settings.prompt_cache_ram), _bytes(settings.prompt_cache_disk)


def _bytes(text: str) -> int:
    """A size setting; "0" is nothing (a tier turned off)."""
    if text.strip() == "0":
        return 0
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ConfigError(f"prompt cache size: {exc}") from exc


def models_file(settings: Settings) -> ModelsFile:
    from server.cli.pull import default_cache_dir

    cache = settings.cache_dir or default_cache_dir()
    return load_models_file(settings.models_file or DEFAULT_MODELS_FILE, cache)


def _ensure_pulled(config: ModelConfig) -> None:
    from server.cli import pull

    if pull.is_present(config.path, config.sha256):
        return
    if config.source is None:
        raise ConfigError(f"model {config.name!r}: {config.path} is missing and has no source")
    print(f"hearth: pulling {config.name} into {config.path}", file=sys.stderr)
    try:
        pull.pull(config.path, pull.parse_source(config.source), config.sha256)
    except ValueError as exc:
        raise ConfigError(f"model {config.name!r}: key 'source': {exc}") from exc


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from backends import registry
    from backends.hardware import detect
    from server import logfmt
    from server.api import lifecycle
    from server.api.app import create_app
    from server.api.security import check_bind
    from server.cli.pull import PullError
    from server.engine.hub import ModelHub
    from server.engine.metrics import Metrics

    logfmt.configure(settings.log_level)
    warning = check_bind(settings)  # a refusal raises ConfigError: exit 2
    if warning:
        logging.getLogger("hearth.security").warning(warning)
    models = models_file(settings)
    names = settings.load or (models.default,)
    if settings.pull_missing:
        for name in names:
            config = models.resolve(name)
            if config is None:
                raise ConfigError(f"model {name!r} is not in {models.path}")
            try:
                _ensure_pulled(config)
            except PullError as exc:
                print(f"hearth: could not pull {config.name}: {exc}", file=sys.stderr)
    hub = ModelHub(
        models, names, hardware=detect(), metrics=Metrics(), max_waiting=settings.max_queue,
        isolation=settings.engine_isolation, hang_seconds=settings.engine_hang_seconds,
        plugins=registry.discover(settings.plugins),
        memory_budget=parse_size(settings.memory_budget) if settings.memory_budget else None,
        keep_alive=parse_duration(settings.keep_alive),
        prompt_cache=prompt_cache(settings),
    )  # fmt: skip
    app = create_app(hub, settings, load_in_background=True)
    # h11, not httptools: h11 bounds the bytes it buffers for an incomplete head (400
    # past it); httptools buffers any size. server/api/limits.py refuses a big whole head.
    server_config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=5, http="h11", h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )  # fmt: skip
    drain = (settings.drain_seconds, settings.drain_notice_seconds)
    lifecycle.leave(lifecycle.serve(hub, server_config, *drain))


def _models(args: argparse.Namespace, settings: Settings) -> int:
    models = models_file(settings)
    for config in models.models.values():
        mark = "*" if config.name == models.default else " "
        present = "present" if config.path.exists() else "not pulled"
        aliases = f" (aliases: {', '.join(config.aliases)})" if config.aliases else ""
        print(f"{mark} {config.name}{aliases}\n    {config.path} [{present}]")
    return 0


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from server.cli.pull import PullError

    models = models_file(settings)
    status = 0
    for name in args.names or [models.default]:
        config = models.resolve(name)
        if config is None:
            print(f"hearth: no model {name!r} in {models.path}", file=sys.stderr)
            status = 1
            continue
        try:
            _ensure_pulled(config)
            print(f"{config.name}: {config.path}")
        except PullError as exc:
            print(f"hearth: {config.name}: {exc}", file=sys.stderr)
            status = 1
    return status


def _info(args: argparse.Namespace, settings: Settings) -> int:
    from server.cli.info import plan_report, report
    from server.config import parse_size

    models = models_file(settings)
    print(report(models))
    if args.name is None:
        if args.gpu_memory is not None:
            raise ConfigError("--gpu-memory needs a model NAME to plan")
        return 0
    config = models.resolve(args.name)
    if config is None:
        raise ConfigError(f"model {args.name!r} is not in {models.path}")
    try:
        gpu_memory = None if args.gpu_memory is None else parse_size(args.gpu_memory)
    except ValueError as exc:
        raise ConfigError(f"--gpu-memory: {exc}") from exc
    print(plan_report(config, gpu_memory))
    return 0
