"""The models as Ollama lists them: ``GET /api/tags`` (the models this server can
answer with), ``POST /api/show`` (one model's details), ``GET /api/ps`` (the loaded
ones), and name lookup.

Names resolve through models.toml (names, aliases, alias patterns); Ollama's
``name:latest`` is ``name``, and a listed model without a tag is listed as
``name:latest``, as Ollama lists every model. Details come from the GGUF header (read
once per file version) or an MLX folder's config.json.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.base import EMBED, GENERATE
from backends.llamacpp.gguf_header import GGUFHeaderError, SkippedArray, read_header
from server.api import fields as f
from server.api.body import hub_of, read_json
from server.config import ModelConfig, ModelsFile
from server.engine.hub import ModelHub
from server.engine.loop import EngineState
from server.errors import InvalidRequest, ModelNotFound, UnsupportedParameter

LATEST = ":latest"
# llama.cpp's general.file_type values, as Ollama names the quantization.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 30: "IQ4_XS", 32: "BF16",
}  # fmt: skip
# A model kept loaded for good: Ollama's keep_alive -1, which it shows as an expiry this
# far away.
FOREVER = timedelta(seconds=(2**63 - 1) / 1e9)


def find(models: ModelsFile, name: str) -> ModelConfig:
    config = models.resolve(name)
    if config is None and name.endswith(LATEST):
        config = models.resolve(name.removesuffix(LATEST))
    if config is None:
        raise ModelNotFound(f'model "{name}" not found, try pulling it first', param="model")
    return config


def listed_name(config: ModelConfig) -> str:
    return config.name if ":" in config.name else config.name + LATEST


async def tags(request: Request) -> Response:
    hub = hub_of(request)
    listed = [c for c in hub.models.models.values() if _loaded(hub, c) or c.path.exists()]
    return JSONResponse({"models": [await _entry(hub, c) for c in listed]})


async def ps(request: Request) -> Response:
    hub = hub_of(request)
    states = {m["id"]: m for m in hub.describe()}
    models = []
    for config in hub.models.models.values():
        caps = hub.engines[config.name].capabilities if _loaded(hub, config) else None
        if caps is None:
            continue
        entry = await _entry(hub, config)
        layers = caps.details.get("gpu_layers") if caps.gpu_offload else 0
        vram = _size_vram(entry["size"], layers, await asyncio.to_thread(_facts, config.path))
        models.append({**entry, "expires_at": _expires(states[config.name]), "size_vram": vram,
                       "context_length": caps.context_length})  # fmt: skip
    return JSONResponse({"models": models})


def _expires(state: dict[str, Any]) -> str:
    """When an idle model unloads; one serving requests, its keep_alive from now; one
    kept for good, as Ollama shows keep_alive -1: about 292 years away."""
    seconds = state["unload_in_seconds"]
    if seconds is None:
        seconds = state["keep_alive_seconds"]
    after = FOREVER if seconds is None else timedelta(seconds=seconds)
    return (datetime.now(UTC) + after).isoformat().replace("+00:00", "Z")


async def show(request: Request) -> Response:
    body = f.as_object(await read_json(request))
    for key in body:
        if key not in ("model", "name", "verbose"):
            raise UnsupportedParameter(f"unknown field {key!r}", param=key)
    name = body.get("model") or body.get("name")  # "name": older clients
    if not isinstance(name, str):
        raise InvalidRequest("model is required", param="model")
    hub = hub_of(request)
    config = find(hub.models, name)
    facts = await asyncio.to_thread(_facts, config.path)
    info = dict(facts["model_info"])
    context = _context(hub, config)
    if arch := info.get("general.architecture"):
        info[f"{arch}.context_length"] = context  # what this server serves, not the trained
    template = config.chat_template or facts["template"]
    return JSONResponse({
        "license": facts["license"],
        "modelfile": f"# served by hearth from models.toml\nFROM {config.path}\n",
        "parameters": _parameters(config, context),
        "template": template or "",
        "details": facts["details"],
        "model_info": info,
        "capabilities": _capabilities(hub, config, template),
        "modified_at": _modified(config.path),
    })  # fmt: skip


def _loaded(hub: ModelHub, config: ModelConfig) -> bool:
    engine = hub.engines.get(config.name)
    return (
        engine is not None and engine.state is EngineState.READY and engine.capabilities is not None
    )


async def _entry(hub: ModelHub, config: ModelConfig) -> dict[str, Any]:
    facts = await asyncio.to_thread(_facts, config.path)
    name = listed_name(config)
    return {
        "name": name, "model": name, "modified_at": _modified(config.path),
        "size": size_of(config.path), "digest": config.sha256 or "", "details": facts["details"],
    }  # fmt: skip


def _context(hub: ModelHub, config: ModelConfig) -> int:
    engine = hub.engines.get(config.name)
    caps = engine.capabilities if engine is not None else None
    if caps is not None:
        return caps.context_length
    return config.context_length


def _parameters(config: ModelConfig, context: int) -> str:
    s = config.sampling
    pairs = [("temperature", s.temperature), ("top_p", s.top_p), ("top_k", s.top_k),
             ("min_p", s.min_p), ("num_ctx", context)]  # fmt: skip
    return "".join(f"{name:<30} {value:g}\n" for name, value in pairs)


def _capabilities(hub: ModelHub, config: ModelConfig, template: str | None) -> list[str]:
    if config.task != GENERATE:  # a reranker: nothing Ollama names
        return ["embedding"] if config.task == EMBED else []
    out = ["completion"]
    if template and "tools" in template:
        out.append("tools")
    engine = hub.engines.get(config.name)
    caps = engine.capabilities if engine is not None else None
    if caps is not None and caps.fim:
        out.append("insert")
    return out


def _size_vram(size: int, gpu_layers: Any, facts: dict[str, Any]) -> int:
    """The share of the weights on the GPU, by layers offloaded (llama.cpp's -1: all,
    the output layer counted as one more)."""
    if not isinstance(gpu_layers, int) or gpu_layers == 0:
        return 0
    info = facts["model_info"]
    blocks = info.get(f"{info.get('general.architecture')}.block_count")
    if gpu_layers < 0 or not isinstance(blocks, int):
        return size
    return size * min(gpu_layers, blocks + 1) // (blocks + 1)


def _modified(path: Path) -> str:
    try:
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        stamp = datetime.fromtimestamp(0, UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def size_of(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _facts(path: Path) -> dict[str, Any]:
    try:
        stat = path.stat()
    except OSError:
        return _described("", {}, None, None)
    if path.is_dir():
        return _mlx_facts(path)
    return _gguf_facts(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _gguf_facts(path: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    """What Ollama shows of a GGUF file; cached per file version (a header takes a while
    to read: its token lists are skipped entry by entry)."""
    try:
        header = read_header(path)
    except (OSError, GGUFHeaderError):
        return _described("gguf", {}, None, None)
    meta = header.metadata
    count = sum(t.n_elements for t in header.tensors)
    info: dict[str, Any] = {
        k: v for k, v in meta.items()
        if not isinstance(v, SkippedArray) and k != "tokenizer.chat_template" and _plain(v)
    }  # fmt: skip
    info["general.parameter_count"] = count
    label = meta.get("general.size_label")
    size_label = label if isinstance(label, str) else _human(count)
    quant = FILE_TYPES.get(meta.get("general.file_type", -1), "unknown")
    template = meta.get("tokenizer.chat_template")
    license_ = meta.get("general.license")
    facts = _described("gguf", info, template if isinstance(template, str) else None,
                       license_ if isinstance(license_, str) else None)  # fmt: skip
    facts["details"] |= {"parameter_size": size_label, "quantization_level": quant}
    return facts


def _mlx_facts(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    arch = config.get("model_type") if isinstance(config, dict) else None
    info = {"general.architecture": arch} if isinstance(arch, str) else {}
    quant = config.get("quantization") if isinstance(config, dict) else None
    bits = quant.get("bits") if isinstance(quant, dict) else None
    facts = _described("safetensors", info, None, None)
    facts["details"]["quantization_level"] = f"{bits}-bit" if bits else "unknown"
    return facts


def _described(
    fmt: str, info: dict[str, Any], template: str | None, license_: str | None
) -> dict[str, Any]:
    arch = info.get("general.architecture", "")
    details = {
        "parent_model": "", "format": fmt, "family": arch, "families": [arch] if arch else None,
        "parameter_size": "", "quantization_level": "",
    }  # fmt: skip
    return {"details": details, "model_info": info, "template": template, "license": license_}


def _plain(value: Any) -> bool:
    """JSON can carry it (a non-finite float cannot)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | bool)


def _human(count: int) -> str:
    if count >= 10**9:
        return f"{count / 10**9:.1f}B"
    return f"{count / 10**6:.0f}M"


ROUTES = [
    Route("/api/tags", tags, methods=["GET"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/ps", ps, methods=["GET"]),
]
