"""The loaded models: one engine each, looked up by name or alias.

:meth:`ModelHub.start` only starts the engines: each loads its model on its own thread,
so the server can listen (and answer liveness) during a long load. Until a model is
loaded its requests get 503 with Retry-After and readiness names it as loading.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from backends import registry
from backends.base import LoadRequest
from backends.hardware import Hardware
from server.config import ModelConfig, ModelsFile
from server.engine.handle import ModelEngine
from server.engine.loop import Engine, EngineState
from server.engine.metrics import Metrics
from server.engine.remote import RemoteEngine
from server.errors import ModelNotFound, ModelUnavailable

log = logging.getLogger("hearth.hub")


class ModelHub:
    def __init__(
        self,
        models: ModelsFile,
        load: Sequence[str],
        *,
        hardware: Hardware,
        metrics: Metrics,
        max_waiting: int,
        plugins: dict[str, registry.PluginInfo] | None = None,
        isolation: str = "thread",
        hang_seconds: float = 120.0,
    ) -> None:
        """``isolation``: ``"process"`` runs each model's engine in a runner process of
        its own (``hearth serve``), ``"thread"`` on a thread of this one."""
        self.models = models
        self._plugins = plugins
        self.metrics = metrics
        self._hw = hardware
        self._to_load = [self._config(name) for name in (load or [models.default])]
        self._max_waiting = max_waiting
        self.engines: dict[str, ModelEngine] = {}
        self._isolation = isolation
        self._hang_seconds = hang_seconds
        self.load_errors: dict[str, str] = {}
        self.backend_names: dict[str, str] = {}
        self.draining = False
        self.inflight = 0  # generation requests between submit and their last byte

    def _config(self, name: str) -> ModelConfig:
        config = self.models.resolve(name)
        if config is None:
            raise ModelNotFound(f"model {name!r} is not in {self.models.path}", param="model")
        return config

    def start(self) -> None:
        """Start loading every model to serve, each on its own engine thread; return
        without waiting (see :meth:`wait_loaded`)."""
        plugins = self._plugins if self._plugins is not None else registry.discover()
        for config in self._to_load:
            try:
                info = registry.choose(config.backend, config.path, plugins, self._hw)
            except registry.BackendUnavailable as exc:
                self.load_errors[config.name] = str(exc)
                log.error("model %s: %s", config.name, exc)
                continue
            assert info.plugin is not None
            self.backend_names[config.name] = info.name
            engine: ModelEngine
            load = self._load_request(config)
            limits = (self._max_waiting, config.default_max_tokens)
            if self._isolation == "process":
                engine = RemoteEngine(
                    config.name, info.plugin, load, metrics=self.metrics,
                    max_waiting=limits[0], default_max_tokens=limits[1],
                    hang_seconds=self._hang_seconds,
                )  # fmt: skip
            else:
                engine = Engine(
                    config.name, info.plugin, load, metrics=self.metrics,
                    max_waiting=limits[0], default_max_tokens=limits[1],
                )  # fmt: skip
            self.engines[config.name] = engine
            engine.start()

    def wait_loaded(self) -> None:
        """Block until every engine has loaded its model or failed to."""
        for engine in self.engines.values():
            engine.wait_loaded()

    def _load_request(self, config: ModelConfig) -> LoadRequest:
        return LoadRequest(
            name=config.name,
            path=config.path,
            context_length=config.context_length,
            max_sequences=config.max_sequences,
            threads=config.threads or self._hw.physical_cores,
            gpu_layers=config.gpu_layers,
            tensor_split=config.tensor_split,
            chat_template=config.chat_template,
            batch_tokens=config.batch_tokens,
            options=config.options,
            gpu_memory_limit=config.gpu_memory_limit,
            kv_cache_type=config.kv_cache_type,
            main_gpu=config.main_gpu,
            weight_repack=config.weight_repack,
        )

    def engine_for(self, name: str) -> tuple[ModelEngine, ModelConfig]:
        """The engine serving ``name``. Model names are keys, never paths."""
        config = self.models.resolve(name)
        if config is None:
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")
        if self.draining:
            raise ModelUnavailable("the server is shutting down", retry_after=10)
        engine = self.engines.get(config.name)
        if engine is None:
            reason = self.load_errors.get(config.name, "it is not loaded in this server")
            raise ModelUnavailable(f"model {config.name!r} is unavailable: {reason}")
        if engine.state is not EngineState.READY:
            detail = f": {engine.error}" if engine.error else ""
            raise ModelUnavailable(
                f"model {config.name!r} is {engine.state.value}{detail}", retry_after=5
            )
        return engine, config

    def describe(self) -> list[dict[str, Any]]:
        return [self._describe(config) for config in self.models.models.values()]

    def _describe(self, config: ModelConfig) -> dict[str, Any]:
        engine = self.engines.get(config.name)
        if engine is not None:
            state, error = engine.state.value, engine.error
        else:
            error = self.load_errors.get(config.name)
            state = "failed" if error else "not_loaded"
        caps = engine.capabilities if engine else None
        return {
            "id": config.name,
            "object": "model",
            "created": 0,
            "owned_by": "hearth",
            "aliases": list(config.aliases),
            "backend": self.backend_names.get(config.name, config.backend),
            "context_length": caps.context_length if caps else config.context_length,
            # llama-server's names, which editor plugins read; null until loaded.
            "n_ctx": caps.context_length if caps else None,
            "n_vocab": caps.vocab_size if caps else None,
            "fim": caps.fim if caps else None,
            "max_sequences": config.max_sequences,
            "loaded": state == EngineState.READY.value,
            "resident_bytes": engine.resident_bytes() if engine else None,
            "runner_pid": engine.pid if engine else None,
            "state": state,
            "error": error,
        }

    def start_drain(self) -> None:
        self.draining = True

    def cut_remaining(self) -> None:
        """End every running and queued request with an error (drain window over)."""
        for engine in self.engines.values():
            engine.cancel_all("the server is shutting down")

    def dead_engines(self) -> list[str]:
        """Engines that served and then failed, not those that failed to load: an engine
        has a backend once its model is loaded."""
        return [name for name, engine in self.engines.items() if engine.died_serving()]

    def check_engines(self) -> None:
        """The watchdog's beat: a runner that stops answering is replaced."""
        for engine in self.engines.values():
            engine.check()

    def not_ready_reason(self) -> str:
        if self.draining:
            return "the server is shutting down"
        engines = self.engines.items()
        loading = [name for name, engine in engines if engine.state is EngineState.LOADING]
        problems = [f"loading: {', '.join(loading)}"] if loading else []
        problems += [f"{name}: {error}" for name, error in self.load_errors.items()]
        for name, engine in engines:
            if engine.state not in (EngineState.READY, EngineState.LOADING):
                problems.append(f"{name}: {engine.state.value} {engine.error or ''}".strip())
        return "; ".join(problems) or "no model is loaded"

    def ready(self) -> bool:
        return (
            not self.draining
            and not self.load_errors
            and bool(self.engines)
            and all(e.state is EngineState.READY for e in self.engines.values())
        )

    def stop(self) -> None:
        """Stop every engine. One still loading is not waited for: it stops when its
        load ends, and a served process leaves without waiting for its thread."""
        for engine in self.engines.values():
            engine.stop(timeout=0 if engine.state is EngineState.LOADING else 30)
