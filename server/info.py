"""``hearth info``: the hardware, the backends, and why each model gets its backend."""

from __future__ import annotations

from backends import registry
from backends.hardware import Hardware, detect
from server.config import ModelsFile


def report(models: ModelsFile, hw: Hardware | None = None) -> str:
    hw = hw or detect()
    plugins = registry.discover()
    lines = [
        f"platform: {hw.system} {hw.machine}" + (" (Apple Silicon)" if hw.apple_silicon else ""),
        f"cpu: {hw.physical_cores} physical cores, {hw.logical_cpus} logical",
        f"memory: {hw.memory_bytes / 2**30:.1f} GiB",
        "gpus: "
        + (", ".join(f"{g.name} ({g.memory_bytes / 2**30:.0f} GiB)" for g in hw.gpus) or "none"),
        "backends:",
    ]
    for info in plugins.values():
        state = "available" if info.available else f"unavailable: {info.reason}"
        lines.append(f"  {info.name}: {state}{_gpu_note(info.name) if info.available else ''}")
    lines.append(f"models ({models.path}):")
    for config in models.models.values():
        lines.append(f"  {config.name}: {_why(config.backend, config.path, plugins, hw)}")
    return "\n".join(lines)


def _gpu_note(name: str) -> str:
    if name != "llamacpp":
        return ""
    from backends.llamacpp import gpu_offload_supported

    if gpu_offload_supported():
        return (
            " (built with GPU offload: all layers go on the GPU unless gpu_layers says otherwise)"
        )
    return " (CPU build: no GPU offload; one thread per physical core)"


def _why(backend: str, path: object, plugins: dict[str, registry.PluginInfo], hw: Hardware) -> str:
    from pathlib import Path

    assert isinstance(path, Path)
    try:
        info = registry.choose(backend, path, plugins, hw)
    except registry.BackendUnavailable as exc:
        return f"cannot be served here: {exc}"
    how = "named in models.toml" if backend != "auto" else _auto_reason(path)
    return f"{info.name} ({how})"


def _auto_reason(path: object) -> str:
    from pathlib import Path

    assert isinstance(path, Path)
    if registry.is_mlx_model(path):
        return "auto: MLX model folder on Apple Silicon"
    return "auto: GGUF file"
