"""``hearth info``: the hardware, the backends, and why each model gets its backend."""

from __future__ import annotations

from backends import registry
from backends.hardware import Hardware, detect
from server.config import ModelConfig, ModelsFile


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
        if info.name == "llamacpp" and info.available:
            lines += _cpu_paths(models)
    lines.append(f"models ({models.path}):")
    for config in models.models.values():
        task = "" if config.task == "generate" else f" [task {config.task}]"
        lines.append(f"  {config.name}{task}: {_why(config.backend, config.path, plugins, hw)}")
    return "\n".join(lines)


def _cpu_paths(models: ModelsFile) -> list[str]:
    """What the llama.cpp build uses of this CPU, and each weight_repack choice."""
    from backends.llamacpp.backend import build_features, repack_choice

    lines = [f"    built for: {' '.join(sorted(build_features())) or 'plain CPU'}"]
    lines.append(f"    weight repack (auto): {repack_choice(None).reason}")
    for config in models.models.values():
        if config.weight_repack is not None:
            reason = repack_choice(config.weight_repack).reason
            lines.append(f"    weight repack for {config.name}: {reason}")
    return lines


def _gpu_note(name: str) -> str:
    if name == "mlx":
        from backends.mlx.load import device_summary

        return f" ({device_summary()})"
    if name != "llamacpp":
        return ""
    if _gpu_build():
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
        return "auto: MLX model folder"
    return "auto: GGUF file"


def plan_report(config: ModelConfig, gpu_memory: int | None = None) -> str:
    """The offload plan for ``config``: on this machine's GPUs, or with ``gpu_memory``
    on one hypothetical card of that size."""
    if registry.is_mlx_model(config.path):
        return _mlx_plan_report(config, gpu_memory)
    from backends.hardware import gpu_free_bytes
    from backends.llamacpp import offload
    from backends.llamacpp.gguf_header import GGUFHeaderError

    gpus = (gpu_memory,) if gpu_memory is not None else gpu_free_bytes()
    try:
        header, plan = offload.plan_model(config, gpus)
    except (GGUFHeaderError, offload.OffloadError) as exc:
        return f"model {config.name}: cannot plan: {exc}"
    if gpu_memory is not None:
        where = f"a hypothetical GPU with {_gib(gpu_memory)} (--gpu-memory)"
    else:
        where = f"{len(gpus)} GPU(s), {_gib(sum(gpus))} free" if gpus else "no GPU"
    on_cpu = plan.n_layer - plan.layers_on_gpu
    gpu_gbps = offload.DEFAULT_GPU_BANDWIDTH / 1e9
    cpu_gbps = offload.DEFAULT_CPU_BANDWIDTH / 1e9
    lines = [
        f"model {config.name} ({header.architecture}, {config.path.name})",
        f"  planned for: {where}",
        f"  llama.cpp here: {_offload_state()}",
        f"  layers: {plan.layers_on_gpu} of {plan.n_layer} on GPU, {on_cpu} on CPU; "
        f"output layer on {'GPU' if plan.output_on_gpu else 'CPU'} "
        f"(n_gpu_layers {plan.gpu_layers})",
        f"  weights: {_gib(plan.weights_gpu_bytes)} on GPU, {_gib(plan.weights_cpu_bytes)} on CPU",
        f"  KV cache ({config.context_length} tokens, {config.kv_cache_type}): "
        f"{_gib(plan.kv_bytes)}, {_gib(plan.kv_gpu_bytes)} of it on GPU",
        f"  compute buffer (GPU): {_gib(plan.compute_bytes)}",
        f"  GPU total: {_gib(plan.gpu_bytes)} of a {_gib(plan.budget_bytes)} budget "
        f"(free or gpu_memory_limit, less {_gib(offload.DEFAULT_MARGIN)})",
        f"  speed limit: {plan.tokens_per_second_limit:.1f} tokens/s for one sequence "
        f"(weights read per token at {gpu_gbps:.0f} GB/s GPU, {cpu_gbps:.0f} GB/s CPU)",
    ]
    if config.gpu_layers is not None:
        lines.append(f"  note: models.toml sets gpu_layers = {config.gpu_layers}, not auto")
    return "\n".join(lines)


def _mlx_plan_report(config: ModelConfig, memory: int | None) -> str:
    from backends.mlx import load as mlx_load

    try:
        plan = mlx_load.plan(config.path, memory or config.gpu_memory_limit)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        return f"model {config.name}: cannot plan: {exc}"
    served = min(config.context_length, plan.kv_tokens_that_fit)
    return "\n".join(
        [
            f"model {config.name} (MLX folder {config.path})",
            f"  memory limit: {_gib(plan.memory_limit)}" + (" (--gpu-memory)" if memory else ""),
            f"  weights: {_gib(plan.weights_bytes)}",
            f"  KV cache: {plan.kv_bytes_per_token} bytes per token; "
            f"{plan.kv_tokens_that_fit} tokens fit under the limit",
            f"  KV budget served: {served} tokens (context_length {config.context_length}), "
            f"shared by up to {config.max_sequences} sequences",
        ]
    )


def _offload_state() -> str:
    try:
        supported = _gpu_build()
    except ImportError:
        return "llama-cpp-python is not installed"
    if supported:
        return 'built with GPU offload: gpu_layers = "auto" follows this plan'
    return "CPU build, no GPU offload: every layer stays on the CPU whatever the plan"


def _gpu_build() -> bool:
    """A GPU here for this llama.cpp build (its RPC backend, in every build, is no GPU)."""
    import llama_cpp as ll

    from backends.llamacpp.gpu import gpu_offload

    return gpu_offload(ll)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
