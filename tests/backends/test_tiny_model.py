"""The tiny model's MLX copy and its GGUF (llama.cpp) compute the same thing.

Same token ids for the same text, last-position logits within float32 noise,
and the same 16 greedy tokens. llama.cpp runs once with an F32 KV cache (the
tight check) and once with its default F16 cache, as hearth's backend runs it.
The GGUF alone is checked against NumPy in ``test_tiny_gguf.py``, without MLX.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.backends.drive import STEPS, llama_greedy, llama_tokens
from tests.backends.test_tiny_gguf import PROMPT
from tests.tiny_model import DEFAULT_TOKENIZER_GGUF, EOS_ID, TinyModel, build_tiny_model

REASON = "compares the tiny model's MLX copy with its GGUF: needs MLX (pip install 'hearth[mlx]')"
mx = pytest.importorskip("mlx.core", reason=REASON)
mlx_lm = pytest.importorskip("mlx_lm", reason=REASON)

TEXTS = [
    PROMPT,
    "def add(a, b):\n    return a + b\n",
    "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y<|fim_middle|>",
    "你好，世界! Ünïcödé — 123456 tabs\tand   spaces\n\n",
    "<|endoftext|><tool_call>{}</tool_call><|file_sep|>",
]


@pytest.fixture(scope="module")
def mlx_model(tiny_model: TinyModel) -> tuple[Any, Any]:
    model, tokenizer = mlx_lm.load(str(tiny_model.mlx_dir))
    return model, tokenizer


def mlx_greedy(model: Any, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    cache = mlx_lm.models.cache.make_prompt_cache(model)
    first = np.array(model(mx.array([ids]), cache=cache)[0, -1])
    logits, tokens = first, []
    for _ in range(STEPS):
        tokens.append(int(logits.argmax()))
        logits = np.array(model(mx.array([tokens[-1:]]), cache=cache)[0, -1])
    return first, tokens


def test_hf_folder_has_the_default_models_tokenizer(tiny_model: TinyModel) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model.hf_dir))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == EOS_ID
    ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|fim_prefix|>", "<|endoftext|>"])
    assert ids == [151644, 151659, 151643]
    assert tokenizer.convert_ids_to_tokens(151645) in tokenizer.all_special_tokens
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(chat, str)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("text", TEXTS)
def test_token_ids_agree(llm: tuple[str, Any], mlx_model: tuple[Any, Any], text: str) -> None:
    assert llama_tokens(llm[1], text) == mlx_model[1].encode(text)


def test_logits_and_greedy_tokens_agree(llm: tuple[str, Any], mlx_model: tuple[Any, Any]) -> None:
    kv_cache, solo = llm
    model, tokenizer = mlx_model
    ids = tokenizer.encode(PROMPT)
    llama_logits, llama_out = llama_greedy(solo, ids)
    mlx_logits, mlx_out = mlx_greedy(model, ids)
    spread = float(mlx_logits.std())
    assert spread > 1.0, "logits too flat for argmax to be meaningful"
    # f32 KV cache: float32 rounding only (~3e-6 of the spread seen);
    # f16 KV cache: ~3e-4 seen.
    tolerance = 1e-4 if kv_cache == "f32" else 3e-3
    assert np.abs(llama_logits - mlx_logits).max() < tolerance * spread
    assert llama_out == mlx_out
    assert len(set(mlx_out)) >= STEPS // 2, f"greedy decoding loops: {mlx_out}"


def test_build_is_deterministic(tiny_model: TinyModel, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path, DEFAULT_TOKENIZER_GGUF)
    for old, new in zip(model_files(tiny_model), model_files(again), strict=True):
        assert sha256(old) == sha256(new), old.name


def model_files(model: TinyModel) -> list[Path]:
    return [
        model.gguf_path,
        *sorted(model.hf_dir.iterdir()),
        model.mlx_dir / "model.safetensors",
        model.mlx_dir / "config.json",
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
