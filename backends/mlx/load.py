"""Loading an MLX model folder: weights, tokenizer, template, memory budget, options."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import LoadRequest, ModelLoadError, TemplateError
from backends.fim import FimTokens
from backends.hardware import detect
from backends.options import PrefixOptions, prefix_options
from backends.templates import ChatTemplate

# Of the memory limit, what the weights and KV may use; the rest is for activations
# and the rest of the process. The decode batch's padding is checked against the whole
# limit as the batch grows (backends.mlx.batch), not set aside here.
USABLE_FRACTION = 0.85
HEADROOM_BYTES = 256 << 20
MIN_KV_TOKENS = 256

FIM_NAMES = {
    "prefix": ("<|fim_prefix|>", "<fim_prefix>", "<PRE>", "▁<PRE>"),
    "suffix": ("<|fim_suffix|>", "<fim_suffix>", "<SUF>", "▁<SUF>"),
    "middle": ("<|fim_middle|>", "<fim_middle>", "<MID>", "▁<MID>"),
    "repo": ("<|repo_name|>", "<repo_name>"),
    "file_sep": ("<|file_sep|>", "<file_sep>"),
}
# End-of-generation tokens besides the configured EOS, as llama.cpp recognises them.
EOG_NAMES = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")


@dataclass(slots=True)
class LoadedModel:
    model: Any
    tokenizer: Any  # the Hugging Face tokenizer
    template: ChatTemplate | None
    fim: FimTokens
    eog: frozenset[int]
    vocab_size: int
    trimmable: bool  # plain KV caches: prefixes can be cut and reused
    kv_bytes_per_token: int
    memory_limit: int
    kv_capacity: int  # KV tokens one sequence alone may hold; the scheduler's sum budget
    options: PrefixOptions
    details: Mapping[str, Any]
    architecture: str | None = None  # config.json's model_type
    special_output: bool = False  # output text shows special tokens (formats.renders_special)

    def new_cache(self) -> list[Any]:
        from mlx_lm.models.cache import make_prompt_cache

        cache: list[Any] = make_prompt_cache(self.model)
        return cache

    def decode_output(self, tokens: list[int]) -> str:
        skip = not self.special_output
        return str(self.tokenizer.decode(tokens, skip_special_tokens=skip))


def load(request: LoadRequest) -> LoadedModel:
    import mlx.core as mx

    options = prefix_options(request, "MLX", "prefix_cache_entries")
    _check_placement(request, mx)
    path = request.path
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not an MLX model folder (no config.json)")
    model, wrapper, config = _load_weights(path)
    hf = wrapper._tokenizer
    per_token, trimmable = _measure_kv(model, mx)
    weights = _weights_bytes(model)
    limit = _memory_limit(request, mx)
    fit = kv_tokens_that_fit(limit, weights, per_token)
    if fit < MIN_KV_TOKENS:
        raise ModelLoadError(
            f"model {request.name!r}: the weights ({weights >> 20} MiB) leave no room for the "
            f"KV cache under the memory limit ({limit >> 20} MiB)"
        )
    n_train = int(config.get("max_position_embeddings") or request.context_length)
    return LoadedModel(
        model=model,
        tokenizer=hf,
        template=_template(request, hf),
        fim=_fim_tokens(hf),
        eog=_eog(wrapper, hf),
        vocab_size=int(config.get("vocab_size") or len(hf)),
        trimmable=trimmable,
        kv_bytes_per_token=per_token,
        memory_limit=limit,
        kv_capacity=min(request.context_length, n_train, fit),
        options=options,
        details={
            "device": mx.default_device().type.name,
            "memory_limit_bytes": limit,
            "weights_bytes": weights,
            "kv_bytes_per_token": per_token,
            "kv_tokens_that_fit": fit,
            "n_ctx_train": n_train,
            "quantization": config.get("quantization"),
        },
        architecture=config.get("model_type"),
    )


def _load_weights(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    from mlx_lm.utils import load as mlx_lm_load

    try:
        model, wrapper, config = mlx_lm_load(str(path), return_config=True)  # type: ignore[misc]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"MLX could not load {path}: {exc}") from exc
    return model, wrapper, dict(config)


def _measure_kv(model: Any, mx: Any) -> tuple[int, bool]:
    """KV bytes per token, from one token through a fresh cache (also a warm-up)."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    cache = make_prompt_cache(model)
    model(mx.array([[0]]), cache=cache)
    mx.eval([layer.state for layer in cache])
    sizes = [layer.keys.shape[2] for layer in cache if getattr(layer, "keys", None) is not None]
    allocated = max(sizes) if sizes else 1
    per_token = max(1, sum(layer.nbytes for layer in cache) // allocated)
    return per_token, all(type(layer) is KVCache for layer in cache)


def _weights_bytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    leaves: Any = tree_flatten(model.parameters())
    return sum(int(v.nbytes) for _, v in leaves)


def _memory_limit(request: LoadRequest, mx: Any) -> int:
    """The configured limit, else the GPU's recommended working set (Apple Silicon:
    wired for the process, so it is not paged out), else the machine's memory."""
    if request.gpu_memory_limit:
        return request.gpu_memory_limit
    recommended = _recommended(mx)
    if recommended:
        mx.set_wired_limit(recommended)
        return recommended
    return detect().memory_bytes


def _recommended(mx: Any) -> int:
    """The GPU's recommended working set; 0 where MLX has no GPU (Linux, mlx[cpu])."""
    return int(mx.device_info().get("max_recommended_working_set_size", 0))


def kv_tokens_that_fit(limit: int, weights: int, per_token: int) -> int:
    """KV tokens that fit in the usable share of ``limit`` beside the weights."""
    return max(0, int(limit * USABLE_FRACTION) - weights - HEADROOM_BYTES) // per_token


def _check_placement(request: LoadRequest, mx: Any) -> None:
    """MLX holds the whole model in unified memory: only ``gpu_layers = 0`` (run on the
    CPU) has a meaning; the llama.cpp placement settings are refused, not ignored."""
    problems = []
    if request.gpu_layers == 0:
        mx.set_default_device(mx.cpu)
    elif request.gpu_layers not in (None, -1):
        problems.append("gpu_layers (MLX keeps every layer in unified memory; 0 means CPU)")
    if request.tensor_split is not None:
        problems.append("tensor_split")
    if request.kv_cache_type != "f16":
        problems.append("kv_cache_type (the MLX batch keeps KV in the model's dtype)")
    if problems:
        raise ModelLoadError(
            f"model {request.name!r}: not supported by the MLX backend: {'; '.join(problems)}"
        )


def _template(request: LoadRequest, hf: Any) -> ChatTemplate | None:
    source = request.chat_template or getattr(hf, "chat_template", None)
    if not isinstance(source, str) or not source:
        return None
    try:
        return ChatTemplate(source, bos_token=hf.bos_token or "", eos_token=hf.eos_token or "")
    except TemplateError as exc:
        raise ModelLoadError(f"model {request.name!r}: {exc}") from exc


def _token_id(vocab: Mapping[str, int], names: tuple[str, ...]) -> int:
    return next((vocab[n] for n in names if n in vocab), -1)


def _fim_tokens(hf: Any) -> FimTokens:
    vocab = hf.get_vocab()
    ids = {role: _token_id(vocab, names) for role, names in FIM_NAMES.items()}
    return FimTokens(ids["prefix"], ids["suffix"], ids["middle"], ids["repo"], ids["file_sep"])


def _eog(wrapper: Any, hf: Any) -> frozenset[int]:
    ids = {int(t) for t in wrapper.eos_token_ids}
    if hf.eos_token_id is not None:
        ids.add(int(hf.eos_token_id))
    vocab = hf.get_vocab()
    ids.update(vocab[n] for n in EOG_NAMES if n in vocab)
    return frozenset(ids)


def head(layer: Any, n: int) -> Any:
    """A new plain KV cache holding the first ``n`` positions of ``layer`` (a copy on
    write: the cached arrays are sliced, never written)."""
    from mlx_lm.models.cache import KVCache

    cache = KVCache()  # type: ignore[no-untyped-call]
    cache.keys = layer.keys[..., :n, :]
    cache.values = layer.values[..., :n, :]
    cache.offset = n
    return cache


def device_summary() -> str:
    """MLX's device and the memory limit a model would be held to, for ``hearth info``."""
    import mlx.core as mx

    recommended = _recommended(mx)
    name = f"{mx.default_device().type.name} ({mx.device_info().get('device_name', 'unknown')})"
    if recommended:
        limit = f"{recommended / 2**30:.1f} GiB (recommended working set, wired)"
    else:
        limit = f"{detect().memory_bytes / 2**30:.1f} GiB (machine memory; no GPU)"
    return f"device {name}, memory limit {limit}"


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    weights_bytes: int
    kv_bytes_per_token: int
    memory_limit: int
    kv_tokens_that_fit: int


def plan(path: Path, memory_limit: int | None = None) -> MemoryPlan:
    """What an MLX folder needs, from its config and weight files, without loading it.
    KV is counted at 2 bytes per value (float16/bfloat16), 4 for float32 models."""
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config", config)
    heads = int(text["num_attention_heads"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    width = 4 if str(config.get("torch_dtype", config.get("dtype"))) == "float32" else 2
    per_token = 2 * int(text["num_hidden_layers"]) * kv_heads * head_dim * width
    weights = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    if memory_limit is None:
        import mlx.core as mx

        memory_limit = _recommended(mx) or detect().memory_bytes
    fit = kv_tokens_that_fit(memory_limit, weights, per_token)
    return MemoryPlan(weights, per_token, memory_limit, fit)
