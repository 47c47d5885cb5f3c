"""Finds backend plugins (the ``hearth.backends`` entry-point group) and picks one.

The built-in backends are listed here too, so a source checkout without installed
package metadata still finds them. A backend whose dependency is missing is listed as
unavailable, with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from backends.base import BackendPlugin
from backends.hardware import Hardware

ENTRY_POINT_GROUP = "hearth.backends"
BUILTIN = {
    "llamacpp": "backends.llamacpp.backend:LlamaCppPlugin",
    "mlx": "backends.mlx.backend:MlxPlugin",
}


class BackendUnavailable(Exception):
    """The chosen backend cannot run here; the message says why and what to install."""


_UNPROBED = object()


class PluginInfo:
    """A discovered plugin. Whether it can run here is asked of it only when needed: the
    MLX plugin's answer imports MLX, which a server of GGUF models has no use for."""

    __slots__ = ("_reason", "name", "plugin")

    def __init__(
        self, name: str, plugin: BackendPlugin | None, reason: str | object | None = _UNPROBED
    ) -> None:
        self.name = name
        self.plugin = plugin
        self._reason = reason

    @property
    def reason(self) -> str | None:
        """Why it is unavailable (None: it is available)."""
        if self._reason is _UNPROBED:
            assert self.plugin is not None
            self._reason = self.plugin.unavailable_reason()
        assert self._reason is None or isinstance(self._reason, str)
        return self._reason

    @property
    def available(self) -> bool:
        return self.plugin is not None and self.reason is None


def discover(extra: Sequence[str] = ()) -> dict[str, PluginInfo]:
    """The built-in backends, those installed packages register under the entry-point
    group, and ``extra`` ones given as ``name=module:Class`` (HEARTH_PLUGINS)."""
    targets = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets[ep.name] = ep.value
    for spec in extra:
        name, _, target = spec.partition("=")
        targets[name.strip()] = target.strip()
    return {name: _load(name, target) for name, target in sorted(targets.items())}


def _load(name: str, target: str) -> PluginInfo:
    module_name, _, attr = target.partition(":")
    try:
        plugin: BackendPlugin = getattr(importlib.import_module(module_name), attr)()
    except Exception as exc:
        return PluginInfo(name, None, f"cannot load plugin {target}: {exc}")
    return PluginInfo(name, plugin)


def is_mlx_model(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def choose(backend: str, path: Path, plugins: dict[str, PluginInfo], hw: Hardware) -> PluginInfo:
    """The plugin for a model: the one named, or for ``auto`` by format and platform."""
    name = backend if backend != "auto" else _auto(path, plugins, hw)
    info = plugins.get(name)
    if info is None:
        known = ", ".join(plugins) or "none"
        raise BackendUnavailable(f"unknown backend {name!r} (installed: {known})")
    if not info.available:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {info.reason}")
    return info


def _auto(path: Path, plugins: dict[str, PluginInfo], hw: Hardware) -> str:
    if is_mlx_model(path):
        mlx = plugins.get("mlx")
        if mlx is not None and mlx.available:
            return "mlx"
        why = mlx.reason if mlx is not None else "the mlx backend is not installed"
        where = (
            "pip install 'hearth[mlx]'"
            if hw.apple_silicon
            else "MLX is native to Apple Silicon; here pip install 'hearth[mlx]' runs it on "
            "the CPU (slowly), or serve a GGUF of the model with llama.cpp"
        )
        raise BackendUnavailable(f"{path} is an MLX model folder and {why}; {where}")
    for name, info in plugins.items():
        if info.plugin is not None and info.plugin.accepts(path):
            return name
    raise BackendUnavailable(f"no backend reads {path} (expected a .gguf file or an MLX folder)")
