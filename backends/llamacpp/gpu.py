"""llama.cpp model and context parameters for GPU offload and the KV cache type.

On a build without GPU offload nothing here changes a parameter except the KV cache
type: every layer stays on the CPU, unless the model lists ``rpc_workers`` (see
:mod:`backends.llamacpp.rpc`), whose memory is planned like a GPU's.

Each model loads on its own engine thread, all at once. A model planned against the free
memory must therefore load before the next one reads it: :func:`loading` lets one GPU
model at a time plan and load (weights, KV cache, compute buffer), so each plan sees the
memory taken by the models loaded before it. CPU-only loads do not wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from backends import hardware
from backends.base import LoadRequest, ModelLoadError
from backends.llamacpp import offload, rpc

_GPU_LOAD = threading.Lock()  # the process's GPUs: one model plans and loads at a time


@contextlib.contextmanager
def loading(ll: Any, request: LoadRequest) -> Iterator[None]:
    """Hold from reading the free memory until the model and its context are loaded.
    A load that offloads nothing (a CPU build, ``gpu_layers = 0``) does not take the lock."""
    offloads = gpu_offload(ll) or request.rpc_workers
    if not offloads or request.gpu_layers == 0:
        yield
        return
    with _GPU_LOAD:
        yield


def gpu_offload(ll: Any) -> bool:
    """Whether this llama.cpp build has a GPU here. llama.cpp's own
    ``llama_supports_gpu_offload`` also says yes for any build with the RPC backend,
    which is every build ``scripts/install`` makes, GPU or not."""
    if not ll.llama_supports_gpu_offload():
        return False
    return not ll.llama_supports_rpc() or bool(rpc.local_gpus())


@dataclass(frozen=True, slots=True)
class Placement:
    """What the model params were set to; ``split`` and ``devices`` (the devices list
    with RPC workers) must outlive the model load."""

    gpu_layers: int
    plan: offload.OffloadPlan | None
    split: Any = None
    devices: rpc.Attached | None = None


def apply_model(ll: Any, params: Any, request: LoadRequest) -> Placement:
    """Set ``n_gpu_layers``, ``main_gpu``, ``tensor_split`` and, for a model with
    ``rpc_workers``, ``devices`` (the workers' devices, then the local GPUs).

    ``gpu_layers = "auto"`` (``None``) plans with the devices' free memory (nvidia-smi,
    each worker's own report) or ``gpu_memory_limit``; with neither known (Apple Metal)
    every layer goes on the GPU.
    """
    workers = rpc.attach(request.rpc_workers, request.name) if request.rpc_workers else None
    local = gpu_offload(ll)
    if not local and workers is None:
        params.n_gpu_layers = 0
        return Placement(0, None)
    free = (workers.free if workers else ()) + (hardware.gpu_free_bytes() if local else ())
    try:
        offload.check_tensor_split(request.tensor_split, len(free) or ll.llama_max_devices())
        plan = offload.plan_for(request, free) if request.gpu_layers is None else None
    except offload.OffloadError as exc:
        raise ModelLoadError(f"model {request.name!r}: {exc}") from exc
    if free and request.main_gpu >= len(free):
        raise ModelLoadError(
            f"model {request.name!r}: main_gpu = {request.main_gpu} but this machine has "
            f"{len(free)} GPU(s)"
        )
    layers = request.gpu_layers if request.gpu_layers is not None else -1
    params.n_gpu_layers = plan.gpu_layers if plan is not None else layers
    params.main_gpu = request.main_gpu
    if workers is not None:
        params.devices = ctypes.addressof(workers.array)
    split = None
    if request.tensor_split:
        split = (ctypes.c_float * ll.llama_max_devices())(*request.tensor_split)
        params.tensor_split = split
    return Placement(params.n_gpu_layers, plan, split, workers)


def apply_kv_cache(ll: Any, params: Any, request: LoadRequest) -> None:
    """Set the K and V cache types; a quantized V cache needs flash attention in
    llama.cpp, so it is switched on rather than left to llama.cpp's automatic choice."""
    types = {"f16": ll.GGML_TYPE_F16, "q8_0": ll.GGML_TYPE_Q8_0, "q4_0": ll.GGML_TYPE_Q4_0}
    if request.kv_cache_type not in types:
        raise ModelLoadError(
            f"model {request.name!r}: kv_cache_type must be one of {', '.join(types)}"
        )
    params.type_k = params.type_v = types[request.kv_cache_type]
    if request.kv_cache_type != "f16":
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED


def context_failure(request: LoadRequest, n_seq: int) -> str:
    """Why ``llama_init_from_model`` returned nothing, as far as we can tell."""
    if request.kv_cache_type != "f16":
        return (
            f"model {request.name!r}: llama.cpp could not create a context with "
            f"kv_cache_type = {request.kv_cache_type!r} (a quantized KV cache needs flash "
            "attention, which this model or build may not support; try kv_cache_type = "
            '"f16") or it is out of memory'
        )
    return (
        f"llama.cpp could not create a context of {request.context_length} tokens "
        f"for {n_seq} sequences (out of memory?)"
    )
