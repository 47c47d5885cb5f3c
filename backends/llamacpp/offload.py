"""How much of a GGUF model fits on the GPU: the offload planner.

Greedy, the way llama.cpp places a model given ``n_gpu_layers``: the token embedding
stays on the CPU (it is read one row per token), the repeating ``blk.N`` layers go on
the GPU from the last one down, each with its share of the KV cache, beside one
compute buffer; the output layer goes on the GPU only when every layer does. The plan
reads the header only (:mod:`backends.llamacpp.gguf_header`), so it runs without a GPU and for
a hypothetical card.

Speed limit: decoding one token reads every weight once (the embedding only one row),
so tokens/s cannot exceed 1 / (GPU bytes / GPU bandwidth + CPU bytes / CPU bandwidth).
Default bandwidths, bytes/s, by device class (datasheet peaks; real decode reaches
roughly 60-80% of them):

===========================  =========
dual-channel DDR5 desktop      80e9
dual-channel DDR4 desktop      45e9
RTX 3090 / RTX 4090           936e9 / 1008e9
A100 80GB / H100 SXM / H200  2039e9 / 3350e9 / 4800e9
===========================  =========
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from backends.base import LoadRequest
from backends.llamacpp.gguf_header import GGUFHeader, GGUFHeaderError, read_header

KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
DEFAULT_MARGIN = 512 * 2**20  # CUDA context, cuBLAS workspace, fragmentation
DEFAULT_GPU_BANDWIDTH = 1008e9  # an RTX 4090
DEFAULT_CPU_BANDWIDTH = 80e9  # dual-channel DDR5
UBATCH = 512  # llama.cpp's default micro-batch, as the backend sets it


class OffloadError(ValueError):
    """The model's header or the GPU settings do not allow a plan."""


@dataclass(frozen=True, slots=True)
class OffloadPlan:
    n_layer: int
    layers_on_gpu: int
    output_on_gpu: bool
    weights_gpu_bytes: int
    weights_cpu_bytes: int
    kv_bytes: int  # the whole cache
    kv_gpu_bytes: int  # the share of the layers on the GPU
    compute_bytes: int  # the GPU compute buffer (0 when nothing is on the GPU)
    budget_bytes: int  # GPU memory the plan may use: free (or limit) less the margin
    tokens_per_second_limit: float

    @property
    def gpu_layers(self) -> int:
        """The value for llama.cpp's ``n_gpu_layers`` (``n_layer + 1`` puts the output
        layer on the GPU too)."""
        return self.n_layer + 1 if self.output_on_gpu else self.layers_on_gpu

    @property
    def gpu_bytes(self) -> int:
        return self.weights_gpu_bytes + self.kv_gpu_bytes + self.compute_bytes


@dataclass(frozen=True, slots=True)
class _Shape:
    n_layer: int
    n_embd: int
    n_head: int
    kv_width: int  # n_head_kv * (key_length + value_length)
    n_ff: int
    n_vocab: int


def plan(
    header: GGUFHeader,
    *,
    context_length: int,
    max_sequences: int,
    kv_cache_type: str = "f16",
    gpus: Sequence[int] = (),
    gpu_memory_limit: int | None = None,
    margin: int = DEFAULT_MARGIN,
    tensor_split: Sequence[float] | None = None,
    gpu_bandwidth: float = DEFAULT_GPU_BANDWIDTH,
    cpu_bandwidth: float = DEFAULT_CPU_BANDWIDTH,
) -> OffloadPlan:
    """Plan the placement of ``header``'s model on GPUs with ``gpus`` bytes free each.

    ``gpu_memory_limit`` caps the total used across GPUs. ``max_sequences`` sizes the
    logits part of the compute buffer; the KV cache holds ``context_length`` cells
    shared by every sequence (llama.cpp's unified cache).
    """
    if kv_cache_type not in KV_BYTES_PER_ELEMENT:
        raise OffloadError(f"kv_cache_type must be one of {', '.join(KV_BYTES_PER_ELEMENT)}")
    check_tensor_split(tensor_split, len(gpus))
    shape = _shape(header)
    kv_layer = int(context_length * shape.kv_width * KV_BYTES_PER_ELEMENT[kv_cache_type])
    flash = kv_cache_type != "f16"
    compute = _compute_bytes(shape, context_length, max_sequences, flash=flash)
    layers = _layer_bytes(header, shape.n_layer)
    output = _output_bytes(header)
    embd = sum(t.nbytes for t in header.tensors if t.name == "token_embd.weight")
    other = header.tensor_bytes - sum(layers) - embd
    budget = _budget(gpus, gpu_memory_limit, margin)
    tied = output * _tied(header)  # a GPU copy of token_embd, not in the file
    kv_all = kv_layer * shape.n_layer
    if gpus and other + tied + sum(layers) + kv_all + compute <= budget:
        on_gpu, gpu_w, output_on_gpu = shape.n_layer, other + tied + sum(layers), True
    else:
        on_gpu, gpu_w = _fit_layers(layers, kv_layer, budget - compute)
        output_on_gpu = False
    cpu_w = header.tensor_bytes - (gpu_w - tied if output_on_gpu else gpu_w)
    # per token the CPU reads its layers and output, but one row of the embedding
    read_cpu = cpu_w - embd + embd // max(shape.n_vocab, 1) + (0 if output_on_gpu else tied)
    seconds = gpu_w / gpu_bandwidth + read_cpu / cpu_bandwidth
    return OffloadPlan(
        n_layer=shape.n_layer,
        layers_on_gpu=on_gpu,
        output_on_gpu=output_on_gpu,
        weights_gpu_bytes=gpu_w,
        weights_cpu_bytes=cpu_w,
        kv_bytes=kv_all,
        kv_gpu_bytes=kv_layer * on_gpu,
        compute_bytes=compute if on_gpu else 0,
        budget_bytes=budget,
        tokens_per_second_limit=1 / seconds if seconds > 0 else float("inf"),
    )


class PlannedModel(Protocol):
    """The fields a plan reads, shared by a load request and a models.toml entry."""

    @property
    def path(self) -> Path: ...
    @property
    def context_length(self) -> int: ...
    @property
    def max_sequences(self) -> int: ...
    @property
    def kv_cache_type(self) -> str: ...
    @property
    def gpu_memory_limit(self) -> int | None: ...
    @property
    def tensor_split(self) -> tuple[float, ...] | None: ...


def plan_model(model: PlannedModel, gpus: Sequence[int]) -> tuple[GGUFHeader, OffloadPlan]:
    """Read ``model``'s GGUF header and plan it on ``gpus`` (bytes free each). Raises
    :class:`GGUFHeaderError` or :class:`OffloadError`."""
    header = read_header(model.path)
    return header, plan(
        header,
        context_length=model.context_length,
        max_sequences=model.max_sequences,
        kv_cache_type=model.kv_cache_type,
        gpus=gpus,
        gpu_memory_limit=model.gpu_memory_limit,
        tensor_split=model.tensor_split,
    )


def plan_for(request: LoadRequest, gpus: Sequence[int]) -> OffloadPlan | None:
    """The plan for a model about to load with ``gpu_layers = "auto"`` on GPUs with
    ``gpus`` bytes free; ``None`` when the free memory is unknown (no nvidia-smi, as on
    Apple Metal) and no ``gpu_memory_limit`` stands in for it."""
    if not gpus:
        if request.gpu_memory_limit is None:
            return None
        gpus = (request.gpu_memory_limit,)
    try:
        return plan_model(request, gpus)[1]
    except GGUFHeaderError as exc:
        raise OffloadError(f"{request.path}: {exc}") from exc


def _budget(gpus: Sequence[int], limit: int | None, margin: int) -> int:
    if not gpus:
        return 0
    free = sum(gpus) if limit is None else min(sum(gpus), limit)
    return max(free - margin, 0)


def check_tensor_split(tensor_split: Sequence[float] | None, n_gpus: int) -> None:
    """A ``tensor_split`` needs one share per GPU present, at most, and a positive sum."""
    if tensor_split is None:
        return
    if len(tensor_split) > n_gpus:
        raise OffloadError(
            f"tensor_split has {len(tensor_split)} entries but this machine has {n_gpus} GPU(s)"
        )
    if sum(tensor_split) <= 0:
        raise OffloadError("tensor_split must give at least one GPU a positive share")


def _shape(header: GGUFHeader) -> _Shape:
    n_layer = header.arch_int("block_count")
    n_embd = header.arch_int("embedding_length")
    n_head = header.arch_int("attention.head_count")
    if not n_layer or not n_embd or not n_head:
        raise OffloadError(
            f"the GGUF header lacks {header.architecture}.block_count, .embedding_length "
            "or .attention.head_count"
        )
    n_head_kv = header.arch_int("attention.head_count_kv") or n_head
    key = header.arch_int("attention.key_length") or n_embd // n_head
    value = header.arch_int("attention.value_length") or key
    n_ff = header.arch_int("feed_forward_length") or 4 * n_embd
    embd = [t for t in header.tensors if t.name == "token_embd.weight"]
    n_vocab = embd[0].shape[-1] if embd else 0
    return _Shape(n_layer, n_embd, n_head, n_head_kv * (key + value), n_ff, n_vocab)


def _layer_bytes(header: GGUFHeader, n_layer: int) -> list[int]:
    sizes = [0] * n_layer
    for t in header.tensors:
        if t.layer is not None and t.layer < n_layer:
            sizes[t.layer] += t.nbytes
    return sizes


def _output_bytes(header: GGUFHeader) -> int:
    """The output projection; with tied embeddings llama.cpp copies token_embd to it."""
    for name in ("output.weight", "token_embd.weight"):
        for t in header.tensors:
            if t.name == name:
                return t.nbytes
    return 0


def _tied(header: GGUFHeader) -> int:
    """1 when the output layer is a GPU copy of token_embd (not counted in the file)."""
    return 0 if any(t.name == "output.weight" for t in header.tensors) else 1


def _compute_bytes(shape: _Shape, n_ctx: int, n_seq: int, *, flash: bool) -> int:
    """llama.cpp's compute buffer for one micro-batch, f32 activations: the logits, the
    feed-forward and attention activations, and without flash attention the KQ scores."""
    rows = UBATCH
    logits = max(n_seq, 1) * shape.n_vocab
    activations = rows * (2 * shape.n_ff + 4 * shape.n_embd)
    scores = 0 if flash else rows * n_ctx * shape.n_head
    return 4 * (logits + activations + scores)


def _fit_layers(layers: Sequence[int], kv_layer: int, room: int) -> tuple[int, int]:
    """How many layers, from the last one down, fit in ``room`` with their KV."""
    count = weights = 0
    for size in reversed(layers):
        if size + kv_layer > room:
            break
        room -= size + kv_layer
        count += 1
        weights += size
    return count, weights
