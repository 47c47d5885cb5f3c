"""The models: one engine each while loaded, looked up by name or alias, loaded on
demand within a memory budget and unloaded when idle.

:meth:`ModelHub.start` starts the models to preload (the default, or ``--model``) and
returns: each loads on its own engine, so the server listens during a long load. A
request for any other model that models.toml names loads it (:meth:`acquire`); requests
that arrive while it loads wait for that one load. Before a load the hub sizes the
model (:func:`~server.engine.residency.footprint`) and, if it does not fit the budget,
unloads idle models, least recently used first; a model serving a request is never
unloaded, so a request that would need that gets 503 naming what holds the memory. An
idle model is unloaded after its ``keep_alive``. Loads are serialized in their decision
(two never overcommit) and bounded per minute (a flood naming many models gets 429).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends import registry
from backends.base import EMBED, GENERATE, RERANK, LoadRequest, PromptCache
from backends.hardware import Hardware
from server.config import ModelConfig, ModelsFile
from server.engine import residency
from server.engine.embed_loop import EmbedEngine
from server.engine.handle import ModelEngine
from server.engine.loop import Engine, EngineState
from server.engine.metrics import Metrics
from server.engine.remote import RemoteEngine
from server.errors import ModelNotFound, ModelUnavailable, QueueFull, WrongModelTask

log = logging.getLogger("hearth.hub")
LOADS_PER_MINUTE = 12
LOAD_POLL_S = 0.05
_DOES = {GENERATE: "generates text", EMBED: "embeds", RERANK: "reranks"}
_DO = {GENERATE: "generate text", EMBED: "embed", RERANK: "rerank"}


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
        memory_budget: int | None = None,
        keep_alive: float = 300.0,
        prompt_cache: tuple[Path | None, int, int] | None = None,
    ) -> None:
        """``isolation``: ``"process"`` runs each model's engine in a runner process of
        its own (``hearth serve``), ``"thread"`` on a thread of this one.
        ``memory_budget``: bytes every loaded model shares (default: the machine's
        memory less 2 GiB). ``keep_alive``: idle seconds before an on-demand model
        without its own ``keep_alive`` is unloaded (preloaded ones stay)."""
        self.models = models
        self._plugins = plugins
        self.metrics = metrics
        self._hw = hardware
        self._preload = [self._config(name) for name in (load or [models.default])]
        self._max_waiting = max_waiting
        self.engines: dict[str, ModelEngine] = {}
        self._isolation = isolation
        self._hang_seconds = hang_seconds
        self.budget = memory_budget or max(hardware.memory_bytes - 2 * 2**30, 2**30)
        self._default_keep_alive = keep_alive
        self._prompt_cache = prompt_cache  # folder, RAM bytes, disk bytes
        self.load_errors: dict[str, str] = {}
        self.backend_names: dict[str, str] = {}
        self.leaving = False  # readiness 503 ahead of a drain; requests still served
        self.draining = False
        self.inflight = 0  # generation requests between submit and their last byte
        self._lock = threading.Lock()  # load and unload decisions
        self._busy: collections.Counter[str] = collections.Counter()  # requests in flight
        self._last_used: dict[str, float] = {}
        self._keep: dict[str, float] = {}  # a client's keep_alive for the next idle spell
        self._footprints: dict[str, int] = {}
        self._loads: collections.deque[float] = collections.deque()
        self._load_started: dict[str, float] = {}

    def _config(self, name: str) -> ModelConfig:
        config = self.models.resolve(name)
        if config is None:
            raise ModelNotFound(f"model {name!r} is not in {self.models.path}", param="model")
        return config

    # -- loading ---------------------------------------------------------------------

    def start(self) -> None:
        """Start loading the models to preload; return without waiting."""
        for config in self._preload:
            try:
                self.load(config)
            except (ModelUnavailable, QueueFull) as exc:
                self.load_errors[config.name] = exc.message
                log.error("model %s: %s", config.name, exc.message)

    def wait_loaded(self) -> None:
        """Block until every engine has loaded its model or failed to."""
        for engine in list(self.engines.values()):
            engine.wait_loaded()

    def load(self, config: ModelConfig) -> ModelEngine:
        """The model's engine, loading it if it is not loaded (making room first)."""
        with self._lock:
            engine = self.engines.get(config.name)
            if engine is not None and engine.state is not EngineState.STOPPED:
                return engine
            if self.draining:
                raise ModelUnavailable("the server is shutting down", retry_after=10)
            self._check_rate(config)
            self._make_room(config)
            return self._start_engine(config)

    def _check_rate(self, config: ModelConfig) -> None:
        now = time.monotonic()
        while self._loads and now - self._loads[0] > 60:
            self._loads.popleft()
        if len(self._loads) >= LOADS_PER_MINUTE:
            raise QueueFull(
                f"{LOADS_PER_MINUTE} model loads in the last minute; model {config.name!r} "
                "is not loaded now, retry later",
                retry_after=int(61 - (now - self._loads[0])),
            )
        self._loads.append(now)

    def _footprint(self, config: ModelConfig) -> int:
        if config.name not in self._footprints:
            try:
                self._footprints[config.name] = residency.footprint(config)
            except Exception:  # an unreadable header fails at load, with its own message
                self._footprints[config.name] = residency.COMPUTE_BYTES
        return self._footprints[config.name]

    def _make_room(self, config: ModelConfig) -> None:
        need = self._footprint(config)
        residents = [
            residency.Resident(name, self._footprint(self.models.models[name]),
                               self._idle(name), self._last_used.get(name, 0.0))
            for name, engine in self.engines.items()
            if engine.state in (EngineState.READY, EngineState.LOADING)
        ]  # fmt: skip
        victims = residency.make_room(residents, need, self.budget)
        if victims is None:
            holders = ", ".join(f"{r.name} ({r.bytes / 2**30:.1f} GiB)" for r in residents)
            raise ModelUnavailable(
                f"model {config.name!r} needs {need / 2**30:.1f} GiB and the memory budget "
                f"({self.budget / 2**30:.1f} GiB) is held by models serving requests: "
                f"{holders}",
                retry_after=10,
            )
        for name in victims:
            self._unload(name, "memory")

    def _start_engine(self, config: ModelConfig) -> ModelEngine:
        plugins = self._plugins if self._plugins is not None else registry.discover()
        try:
            info = registry.choose(config.backend, config.path, plugins, self._hw)
        except registry.BackendUnavailable as exc:
            self.load_errors[config.name] = str(exc)
            raise ModelUnavailable(f"model {config.name!r} is unavailable: {exc}") from exc
        assert info.plugin is not None
        self.backend_names[config.name] = info.name
        self.load_errors.pop(config.name, None)
        load = self._load_request(config)
        limits = {"max_waiting": self._max_waiting, "default_max_tokens": config.default_max_tokens}
        engine: ModelEngine
        if self._isolation == "process":
            engine = RemoteEngine(config.name, info.plugin, load, metrics=self.metrics,
                                  hang_seconds=self._hang_seconds, **limits)  # fmt: skip
        else:
            kind = Engine if config.task == GENERATE else EmbedEngine
            engine = kind(config.name, info.plugin, load, metrics=self.metrics, **limits)
        self.engines[config.name] = engine
        self._load_started[config.name] = time.monotonic()
        self._last_used[config.name] = time.monotonic()
        self.metrics.inc("hearth_model_loads_total", model=config.name)
        engine.start()
        return engine

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
            prompt_cache=self._prompt_cache_for(config),
            reasoning_parser=config.reasoning_parser,
            tool_parser=config.tool_parser,
            task=config.task,
            pooling=config.pooling,
            normalize=config.normalize,
            rpc_workers=config.rpc_workers,
            speculative=config.speculative,
        )

    def _prompt_cache_for(self, config: ModelConfig) -> PromptCache | None:
        if self._prompt_cache is None:
            return None
        folder, ram, disk = self._prompt_cache
        try:
            info = config.path.stat()
            identity = f"{config.sha256}:{info.st_size}:{info.st_mtime_ns}"
        except OSError:
            return None
        return PromptCache(folder, ram, disk, identity)

    # -- serving ---------------------------------------------------------------------

    def engine_for(self, name: str) -> tuple[ModelEngine, ModelConfig]:
        """The ready engine serving ``name``, without loading. Model names are keys,
        never paths."""
        config = self.models.resolve(name)
        if config is None:
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")
        if self.draining:
            raise ModelUnavailable("the server is shutting down", retry_after=10)
        engine = self.engines.get(config.name)
        if engine is None:
            reason = self.load_errors.get(config.name, "it is not loaded")
            raise ModelUnavailable(f"model {config.name!r} is unavailable: {reason}")
        if engine.state is not EngineState.READY:
            detail = f": {engine.error}" if engine.error else ""
            raise ModelUnavailable(
                f"model {config.name!r} is {engine.state.value}{detail}", retry_after=5
            )
        return engine, config

    def is_loaded(self, name: str) -> bool:
        config = self.models.resolve(name)
        engine = self.engines.get(config.name) if config else None
        return engine is not None and engine.state is EngineState.READY

    async def acquire(self, name: str, task: str | None = None) -> tuple[ModelEngine, ModelConfig]:
        """The engine serving ``name``, loading the model first when it is not loaded;
        a request that finds it loading waits for that load. With ``task``, a model
        loaded for another task is refused before it loads (:meth:`check_task`)."""
        engine, config = await self.start_load(name, task)
        while engine.state is EngineState.LOADING and self.engines.get(config.name) is engine:
            await asyncio.sleep(LOAD_POLL_S)
        return self.engine_for(name)

    async def start_load(
        self, name: str, task: str | None = None
    ) -> tuple[ModelEngine, ModelConfig]:
        """Start loading ``name`` unless it is loaded or loading; return without waiting.
        Raises what a load refuses at once (unknown model, a model for another task, no
        room, too many loads), so a streamed response starts only for a load under way."""
        config = self.model_for(name, task)
        engine = self.engines.get(config.name)
        if engine is None or engine.state is EngineState.STOPPED:
            engine = await asyncio.to_thread(self.load, config)
        return engine, config

    def model_for(self, name: str, task: str | None = None) -> ModelConfig:
        """The model ``name`` resolves to; with ``task``, one loaded for that task (a
        request of the wrong kind for the model, a chat for an embedding model, is
        refused naming the models that can serve it)."""
        config = self.models.resolve(name)
        if config is None:
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")
        if task is None or config.task == task:
            return config
        able = self.models.serving(task)
        which = f"models that can: {', '.join(able)}" if able else (
            f'no model in models.toml can (one with task = "{task}" would)')  # fmt: skip
        raise WrongModelTask(
            f'model {config.name!r} {_DOES[config.task]} (task = "{config.task}" in '
            f"models.toml) and cannot {_DO[task]}; {which}",
            param="model",
        )

    def hold(self, name: str) -> None:
        """A request for ``name`` started: the model is busy and will not be unloaded."""
        self._busy[name] += 1

    def release(self, name: str, keep_alive: float | None = None) -> None:
        """A request for ``name`` ended; ``keep_alive`` (Ollama's, per request) sets how
        long the model stays once idle, within the model's own keep_alive."""
        self._busy[name] -= 1
        self._last_used[name] = time.monotonic()
        if keep_alive is not None:
            self._keep[name] = min(keep_alive, self._keep_alive(self.models.models[name]))

    def _idle(self, name: str) -> bool:
        return self._busy[name] <= 0

    def _keep_alive(self, config: ModelConfig) -> float:
        if config.keep_alive is not None:
            return config.keep_alive
        preloaded = any(c.name == config.name for c in self._preload)
        return residency.FOREVER if preloaded else self._default_keep_alive

    def unload(self, name: str, reason: str = "request") -> None:
        """Unload a model now (``POST /models/unload``): 503 while it serves requests."""
        config = self._config(name)
        with self._lock:
            if not self._idle(config.name):
                raise ModelUnavailable(
                    f"model {config.name!r} is serving {self._busy[config.name]} request(s); "
                    "retry once they end",
                    retry_after=5,
                )
            self._unload(config.name, reason)

    def _unload(self, name: str, reason: str) -> None:
        engine = self.engines.pop(name, None)
        if engine is None:
            return
        self._keep.pop(name, None)
        self.metrics.inc("hearth_model_unloads_total", model=name, reason=reason)
        self.metrics.set("hearth_model_resident_bytes", 0, model=name)
        log.info("model %s unloaded (%s)", name, reason)
        threading.Thread(target=engine.stop, name=f"unload-{name}", daemon=True).start()

    def check_engines(self) -> None:
        """The watchdog's beat: a runner that stops answering is replaced; an idle model
        past its keep_alive is unloaded; a finished load is timed."""
        now = time.monotonic()
        for name, engine in list(self.engines.items()):
            engine.check()
            started = self._load_started.get(name)
            if started is not None and engine.state is not EngineState.LOADING:
                self.metrics.observe("hearth_model_load_seconds", now - started, model=name)
                del self._load_started[name]
            if engine.state is EngineState.READY and self._idle(name):
                keep = self._keep.get(name, self._keep_alive(self.models.models[name]))
                if now - self._last_used.get(name, now) >= keep:
                    with self._lock:
                        if self._idle(name) and self.engines.get(name) is engine:
                            self._unload(name, "idle")

    # -- status ----------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        return [self._describe(config) for config in self.models.models.values()]

    def _describe(self, config: ModelConfig) -> dict[str, Any]:
        engine = self.engines.get(config.name)
        state, error, unload_at = self._state(config, engine)
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
            "task": config.task,
            "pooling": (caps.pooling if caps else None) or config.pooling,
            "normalize": config.normalize,
            "matryoshka": config.matryoshka,
            "embedding_length": (caps.embedding_size or None) if caps else None,
            "max_sequences": config.max_sequences,
            "loaded": state in ("ready", "idle"),
            "state": state,
            "error": error,
            "unload_in_seconds": unload_at,
            "keep_alive_seconds": _seconds(self._keep_alive(config)),
            "requests_in_flight": max(self._busy[config.name], 0),
            "footprint_bytes": self._footprints.get(config.name),
            "resident_bytes": engine.resident_bytes() if engine else None,
            "runner_pid": engine.pid if engine else None,
        }

    def _state(
        self, config: ModelConfig, engine: ModelEngine | None
    ) -> tuple[str, str | None, float | None]:
        if engine is None:
            error = self.load_errors.get(config.name)
            return ("failed" if error else "not_loaded"), error, None
        if engine.state is not EngineState.READY or not self._idle(config.name):
            return engine.state.value, engine.error, None
        keep = self._keep.get(config.name, self._keep_alive(config))
        if keep == residency.FOREVER:
            return "ready", None, None
        idle_for = time.monotonic() - self._last_used.get(config.name, time.monotonic())
        return "idle", None, round(max(keep - idle_for, 0.0), 1)

    def announce_drain(self) -> None:
        """Readiness turns 503 while requests are still served, so a balancer stops
        sending new ones before the drain refuses them."""
        self.leaving = True

    def start_drain(self) -> None:
        self.leaving = True
        self.draining = True

    def cut_remaining(self) -> None:
        """End every running and queued request with an error (drain window over)."""
        for engine in list(self.engines.values()):
            engine.cancel_all("the server is shutting down")

    def dead_engines(self) -> list[str]:
        """In-process engines that served and then failed: the process should exit."""
        return [name for name, engine in self.engines.items() if engine.died_serving()]

    def not_ready_reason(self) -> str:
        if self.leaving:
            return "the server is shutting down"
        engines = list(self.engines.items())
        loading = [name for name, engine in engines if engine.state is EngineState.LOADING]
        problems = [f"loading: {', '.join(loading)}"] if loading else []
        problems += [f"{name}: {error}" for name, error in self.load_errors.items()]
        for name, engine in engines:
            if engine.state not in (EngineState.READY, EngineState.LOADING):
                problems.append(f"{name}: {engine.state.value} {engine.error or ''}".strip())
        return "; ".join(problems) or "no model is loaded"

    def ready(self) -> bool:
        """Every preloaded model is ready and no model has failed."""
        preloaded = [self.engines.get(c.name) for c in self._preload]
        return (
            not self.leaving
            and not self.load_errors
            and all(e is not None and e.state is EngineState.READY for e in preloaded)
            and all(e.state is not EngineState.FAILED for e in self.engines.values())
        )

    def stop(self) -> None:
        """Stop every engine. One still loading is not waited for: it stops when its
        load ends, and a served process leaves without waiting for its thread."""
        for engine in list(self.engines.values()):
            engine.stop(timeout=0 if engine.state is EngineState.LOADING else 30)


def _seconds(value: float) -> float | None:
    return None if value == residency.FOREVER else value
