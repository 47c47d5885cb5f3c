"""models.toml: one table per model, validated into frozen values.

A mistake raises :class:`ConfigError` naming the model and the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.base import (
    DRAFT_MODEL,
    DRAFTERS,
    EMBED,
    GENERATE,
    INTEGER_SAMPLING,
    POOLINGS,
    RERANK,
    SAMPLING_RANGES,
    TASKS,
    SamplingParams,
    Speculative,
)
from backends.formats import NONE, REASONING_FORMATS, TOOL_FORMATS
from backends.llamacpp.rpc import MAX_WORKERS as MAX_RPC_WORKERS
from backends.llamacpp.rpc import split_endpoint

DEFAULT_MODELS_FILE = Path(__file__).resolve().parent.parent / "models.toml"

_KEYS = {
    "aliases", "backend", "path", "source", "sha256", "context_length", "max_sequences",
    "threads", "gpu_layers", "tensor_split", "chat_template", "chat_template_file",
    "sampling", "batch_tokens", "default_max_tokens", "options", "gpu_memory_limit",
    "kv_cache_type", "main_gpu", "weight_repack", "keep_alive", "reasoning_parser",
    "tool_parser", "task", "pooling", "normalize", "matryoshka", "rpc_workers",
    "speculative",
}  # fmt: skip
EMBED_MAX_SEQUENCES = 64  # an embedding model's default inputs per forward pass
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


class ConfigError(Exception):
    """models.toml is wrong; the message names the model and the key."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    path: Path
    aliases: tuple[str, ...] = ()
    backend: str = "auto"
    source: str | None = None
    sha256: str | None = None
    context_length: int = 8192
    max_sequences: int = 8
    threads: int = 0
    gpu_layers: int | None = None  # None: auto
    tensor_split: tuple[float, ...] | None = None
    gpu_memory_limit: int | None = None  # bytes
    kv_cache_type: str = "f16"
    main_gpu: int = 0
    weight_repack: bool | None = None  # None: auto (backends/llamacpp/cpu.py)
    keep_alive: float | None = None  # idle seconds before unload; None: the server's rule
    chat_template: str | None = None
    batch_tokens: int = 512
    default_max_tokens: int = 4096
    sampling: SamplingParams = field(default_factory=SamplingParams)
    options: Mapping[str, Any] = field(default_factory=dict)
    # The output parsers (backends.formats names, or "none"); None: detected at load
    reasoning_parser: str | None = None
    tool_parser: str | None = None
    task: str = GENERATE  # generate, embed or rerank
    pooling: str | None = None  # an embed or rerank model's; None: from the model's metadata
    normalize: bool = False  # an embed model's vectors scaled to unit length
    matryoshka: bool = False  # trained so that a vector's first dimensions embed alone
    rpc_workers: tuple[str, ...] = ()  # llama.cpp RPC workers, "HOST:PORT" each
    # Speculative decoding (the [speculative] table); None: none (an embedding model)
    speculative: Speculative | None = field(default_factory=Speculative)
    draft_model: str | None = None  # [speculative] draft_model: another model's name


@dataclass(frozen=True, slots=True)
class ModelsFile:
    path: Path
    default: str
    models: Mapping[str, ModelConfig]

    def serving(self, task: str) -> list[str]:
        """The names of the models loaded for ``task``, in file order."""
        return [name for name, model in self.models.items() if model.task == task]

    def resolve(self, name: str) -> ModelConfig | None:
        """Find a model by name or alias, then by an alias pattern (``"claude-*"``: a
        ``*`` stands for any text), in file order. Only ever a lookup, never a path."""
        if name in self.models:
            return self.models[name]
        for model in self.models.values():
            if name in model.aliases:
                return model
        for model in self.models.values():
            if any(_matches(alias, name) for alias in model.aliases if "*" in alias):
                return model
        return None


def load_models_file(path: Path, cache_dir: Path) -> ModelsFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read models file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    tables = data.get("models")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: needs at least one [models.NAME] table")
    unknown = set(data) - {"models", "default"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    models = {
        name: _parse_model(name, table, path.parent, cache_dir) for name, table in tables.items()
    }
    _check_names(models)
    _draft_models(models)
    default = data.get("default", next(iter(models)))
    if default not in models:
        raise ConfigError(f"{path}: default = {default!r} is not a model in this file")
    return ModelsFile(path=path, default=default, models=models)


def _matches(pattern: str, name: str) -> bool:
    """``*`` matches any text; nothing else is special (fnmatch's ``?`` and ``[`` are not)."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name, re.S) is not None


def _check_names(models: Mapping[str, ModelConfig]) -> None:
    seen: dict[str, str] = {}
    for model in models.values():
        for name in (model.name, *model.aliases):
            if name in seen and seen[name] != model.name:
                raise ConfigError(
                    f"model {model.name!r}: name or alias {name!r} is also used by {seen[name]!r}"
                )
            seen[name] = model.name


def _parse_model(name: str, table: Any, base: Path, cache_dir: Path) -> ModelConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"model {name!r}: must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"model {name!r}: unknown key(s): {', '.join(sorted(unknown))}")
    get = _Getter(name, table)
    task = get.choice("task", TASKS)
    template = get.str_or_none("chat_template")
    template_file = get.str_or_none("chat_template_file")
    if template_file is not None:
        template = _read_template(name, _resolve_path(template_file, base))
    return ModelConfig(
        name=name,
        path=_model_path(get, cache_dir),
        aliases=get.str_tuple("aliases"),
        backend=get.str_or_none("backend") or "auto",
        source=get.str_or_none("source"),
        sha256=get.str_or_none("sha256"),
        context_length=get.integer("context_length", 8192, minimum=64),
        max_sequences=get.integer(
            "max_sequences", 8 if task == GENERATE else EMBED_MAX_SEQUENCES, minimum=1, maximum=256
        ),
        threads=get.integer("threads", 0, minimum=0),
        gpu_layers=get.gpu_layers(),
        tensor_split=get.float_tuple("tensor_split"),
        gpu_memory_limit=get.size("gpu_memory_limit"),
        kv_cache_type=get.choice("kv_cache_type", KV_CACHE_TYPES),
        main_gpu=get.integer("main_gpu", 0, minimum=0),
        weight_repack=get.auto_bool("weight_repack"),
        keep_alive=get.keep_alive(),
        chat_template=template,
        batch_tokens=get.integer("batch_tokens", 512, minimum=16),
        default_max_tokens=get.integer("default_max_tokens", 4096, minimum=1),
        sampling=get.sampling(),
        options=get.table("options"),
        reasoning_parser=get.parser("reasoning_parser", REASONING_FORMATS),
        tool_parser=get.parser("tool_parser", TOOL_FORMATS),
        task=task,
        rpc_workers=_rpc_workers(get),
        **_speculative(get, task),
        **_pooling(get, task),
    )


_SPECULATIVE_KEYS = {"drafters", "draft_model", "ngram_min", "ngram_max", "max_draft",
                     "max_batch"}  # fmt: skip


def _speculative(get: _Getter, task: str) -> dict[str, Any]:
    """The ``[speculative]`` table: a generating model speculates with prompt lookup
    unless it says otherwise (``drafters = []``: never)."""
    if task != GENERATE:
        if "speculative" in get.values:
            raise ConfigError(f"model {get.model!r}: key 'speculative' needs task = \"generate\"")
        return {"speculative": None}
    table = get.table_of("speculative")
    unknown = set(table) - _SPECULATIVE_KEYS
    if unknown:
        raise ConfigError(f"model {get.model!r}: unknown key(s) in [speculative]: "
                          + ", ".join(sorted(unknown)))  # fmt: skip
    sub = _Getter(f"{get.model}] [speculative", table)
    drafters = sub.str_tuple("drafters") if "drafters" in table else None
    if drafters is not None and (
        set(drafters) - set(DRAFTERS) or len(set(drafters)) < len(drafters)
    ):
        raise sub.fail("drafters", "a list of " + " and ".join(f'"{d}"' for d in DRAFTERS))
    draft_model = sub.str_or_none("draft_model")
    if (draft_model is not None) != (drafters is not None and DRAFT_MODEL in drafters):
        raise ConfigError(f"model {get.model!r}: [speculative] draft_model and the drafter "
                          '"model" go together')  # fmt: skip
    n_min = sub.integer("ngram_min", 2, minimum=1, maximum=16)
    spec = Speculative(
        drafters=drafters,
        ngram_min=n_min,
        ngram_max=sub.integer("ngram_max", max(4, n_min), minimum=n_min, maximum=16),
        max_draft=sub.integer("max_draft", 16, minimum=1, maximum=64),
        max_batch=sub.integer("max_batch", 0, minimum=0),
    )
    return {"speculative": spec, "draft_model": draft_model}


def _draft_models(models: dict[str, ModelConfig]) -> None:
    """Resolve each ``draft_model`` to the model of that name in the file: a GGUF model
    that generates, and not itself."""
    for name, model in models.items():
        if model.draft_model is None or model.speculative is None:
            continue
        draft = models.get(model.draft_model)
        if draft is None or draft.name == name or draft.task != GENERATE or draft.path.is_dir():
            raise ConfigError(
                f"model {name!r}: [speculative] draft_model = {model.draft_model!r} must name "
                "another GGUF model of this file that generates text"
            )
        spec = dataclasses.replace(model.speculative, draft_model=draft.path)
        models[name] = dataclasses.replace(model, speculative=spec)


def _rpc_workers(get: _Getter) -> tuple[str, ...]:
    """``rpc_workers``: llama.cpp RPC workers as ``"HOST:PORT"`` (IPv4 or a name), each
    once, at most ggml's 16."""
    workers = get.str_tuple("rpc_workers")
    for worker in workers:
        try:
            split_endpoint(worker)
        except ValueError as exc:
            raise get.fail("rpc_workers", f'a list of "HOST:PORT" strings ({exc})') from None
    if len(set(workers)) != len(workers) or len(workers) > MAX_RPC_WORKERS:
        raise get.fail("rpc_workers", f"at most {MAX_RPC_WORKERS} workers, each named once")
    return workers


def _pooling(get: _Getter, task: str) -> dict[str, Any]:
    """``pooling``, ``normalize`` and ``matryoshka``: an embedding model's (a reranker
    pools by ``rank``, and takes only that)."""
    allowed = {EMBED: ("pooling", "normalize", "matryoshka"), RERANK: ("pooling",)}.get(task, ())
    for key in ("pooling", "normalize", "matryoshka"):
        if key in get.values and key not in allowed:
            tasks = '"embed" or "rerank"' if key == "pooling" else '"embed"'
            raise ConfigError(f"model {get.model!r}: key {key!r} needs task = {tasks}")
    pooling = get.str_or_none("pooling")
    choices = ("rank",) if task == RERANK else tuple(p for p in POOLINGS if p != "rank")
    if pooling is not None and pooling not in choices:
        raise get.fail("pooling", "one of " + ", ".join(f'"{c}"' for c in choices))
    return {
        "pooling": "rank" if task == RERANK else pooling,
        "normalize": get.flag("normalize", default=True) if task == EMBED else False,
        "matryoshka": get.flag("matryoshka", default=False),
    }


def _model_path(get: _Getter, cache_dir: Path) -> Path:
    raw = get.str_or_none("path")
    if raw is None:
        raise ConfigError(f"model {get.model!r}: key 'path' is required")
    return _resolve_path(raw, cache_dir)


def _resolve_path(raw: str, base: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def _read_template(model: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"model {model!r}: chat_template_file {path}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class _Getter:
    model: str
    values: Mapping[str, Any]

    def fail(self, key: str, expected: str) -> ConfigError:
        return self._fail(key, expected)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.values.get(key, default)
        if isinstance(value, bool):
            return value
        raise self._fail(key, "true or false")

    def _fail(self, key: str, expected: str) -> ConfigError:
        got = self.values[key]
        return ConfigError(f"model {self.model!r}: key {key!r} must be {expected}, got {got!r}")

    def str_or_none(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self._fail(key, "a string")

    def str_tuple(self, key: str) -> tuple[str, ...]:
        value = self.values.get(key, [])
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise self._fail(key, "a list of strings")

    def float_tuple(self, key: str) -> tuple[float, ...] | None:
        value = self.values.get(key)
        if value is None:
            return None
        ok = isinstance(value, list) and value and all(_is_number(v) and v >= 0 for v in value)
        if ok:
            return tuple(float(v) for v in value)
        raise self._fail(key, "a list of non-negative numbers")

    def integer(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.values.get(key, default)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if whole and value >= minimum and (maximum is None or value <= maximum):
            return int(value)
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise self._fail(key, f"an integer >= {minimum}{bound}")

    def gpu_layers(self) -> int | None:
        value = self.values.get("gpu_layers", "auto")
        if value == "auto":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= -1:
            return value
        raise self._fail("gpu_layers", '"auto" or an integer >= -1 (-1: all)')

    def auto_bool(self, key: str) -> bool | None:
        value = self.values.get(key, "auto")
        if value == "auto":
            return None
        if isinstance(value, bool):
            return value
        raise self._fail(key, '"auto", true or false')

    def keep_alive(self) -> float | None:
        value = self.values.get("keep_alive")
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self._fail("keep_alive", str(exc)) from exc

    def size(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is None:
            return None
        try:
            return parse_size(value)
        except ValueError:
            raise self._fail(
                key, 'a positive size: bytes, or a string like "24GB" or "24GiB"'
            ) from None

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.values.get(key, choices[0])
        if value in choices:
            return str(value)
        raise self._fail(key, "one of " + ", ".join(f'"{c}"' for c in choices))

    def parser(self, key: str, names: frozenset[str]) -> str | None:
        value = self.values.get(key)
        if value is None or value in names or value == NONE:
            return value
        raise self._fail(key, "one of " + ", ".join(f'"{n}"' for n in [*sorted(names), NONE]))

    def table_of(self, key: str) -> dict[str, Any]:
        value = self.values.get(key, {})
        if isinstance(value, dict):
            return value
        raise self._fail(key, "a table")

    def table(self, key: str) -> Mapping[str, Any]:
        return dict(self.table_of(key))

    def sampling(self) -> SamplingParams:
        values = self.table_of("sampling")
        unknown = set(values) - set(SAMPLING_RANGES)
        if unknown:
            raise ConfigError(
                f"model {self.model!r}: unknown key(s) in sampling: {', '.join(sorted(unknown))}"
            )
        for key, value in values.items():
            lo, hi = SAMPLING_RANGES[key]
            whole = key in INTEGER_SAMPLING
            ok = (
                (isinstance(value, int) and not isinstance(value, bool))
                if whole
                else _is_number(value)
            )
            if not ok or not lo <= value <= hi:
                kind = "an integer" if whole else "a number"
                raise ConfigError(
                    f"model {self.model!r}: sampling.{key} must be {kind} from {lo:g} to {hi:g}, "
                    f"got {value!r}"
                )
        return SamplingParams(**values)


FOREVER = math.inf
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(value: object) -> float:
    """Seconds: a number, or a duration such as ``"5m"``, ``"1h30m"``, ``"90s"``; a
    negative one (``-1``) is for good (``math.inf``). Raises ValueError."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return FOREVER if value < 0 else float(value)
    if isinstance(value, str):
        text = value.strip()
        body = text.removeprefix("-")
        parts = _DURATION.findall(body)
        if body and "".join(n + u for n, u in parts) == body:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
            return FOREVER if text.startswith("-") else seconds
    raise ValueError(f'a duration such as "5m", 0 or -1 (never), not {value!r}')


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "24GB" (10^9) or "24GiB" (2^30)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r}")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if size <= 0:
        raise ValueError(f"not a positive size: {value!r}")
    return size


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
