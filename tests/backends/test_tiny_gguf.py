"""llama.cpp on the tiny model's GGUF, checked against a NumPy forward pass of its weights.

Nothing here needs MLX or the Hugging Face libraries: the GGUF is built with numpy and
gguf alone (the ``tiny_gguf`` fixture), so these tests run wherever the test command
runs. The MLX copy is compared with llama.cpp in ``test_tiny_model.py``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.base import Backend
from tests.backends.drive import STEPS, generate, llama_greedy, llama_tokens
from tests.tiny_model import (
    N_EMBD,
    N_HEAD,
    N_HEAD_KV,
    N_LAYER,
    RMS_EPS,
    ROPE_THETA,
    build_tiny_gguf,
    make_weights,
)

PROMPT = (
    "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# What Python must not import for these tests: MLX and the libraries that come with it.
MLX_AND_HF = ("mlx", "mlx.core", "mlx_lm", "safetensors", "tokenizers", "transformers")


# -- the reference: Qwen2's forward pass in NumPy, float64 ---------------------------


def _rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.sqrt((x * x).mean(-1, keepdims=True) + RMS_EPS) * weight
    return out


def _rope(x: np.ndarray) -> np.ndarray:
    """Rotary positions, llama.cpp's NEOX layout (qwen2): the halves of each head rotate."""
    half = x.shape[-1] // 2
    angle = np.arange(x.shape[0])[:, None] * ROPE_THETA ** (-np.arange(half) / half)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def _attention(w: dict[str, np.ndarray], p: str, h: np.ndarray) -> np.ndarray:
    n, head_dim = h.shape[0], N_EMBD // N_HEAD

    def project(name: str, heads: int) -> np.ndarray:
        out: np.ndarray = h @ w[f"{p}self_attn.{name}.weight"].T + w[f"{p}self_attn.{name}.bias"]
        return out.reshape(n, heads, head_dim)

    q, k = _rope(project("q_proj", N_HEAD)), _rope(project("k_proj", N_HEAD_KV))
    v = project("v_proj", N_HEAD_KV)
    k, v = (np.repeat(t, N_HEAD // N_HEAD_KV, axis=1) for t in (k, v))  # grouped heads
    scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(head_dim)
    scores += np.triu(np.full((n, n), -np.inf), 1)  # causal
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out: np.ndarray = np.einsum("hts,shd->thd", probs, v).reshape(n, N_EMBD)
    out = out @ w[f"{p}self_attn.o_proj.weight"].T
    return out


def reference_hidden(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Every position's last hidden state over ``ids``, after the final norm (what
    llama.cpp pools for an embedding)."""
    x = w["model.embed_tokens.weight"][ids]
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        x = x + _attention(w, p, _rms(x, w[p + "input_layernorm.weight"]))
        h = _rms(x, w[p + "post_attention_layernorm.weight"])
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    return _rms(x, w["model.norm.weight"])


def reference_logits(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """The last position's logits over ``ids`` (tied embeddings: the head is the table)."""
    out: np.ndarray = w["model.embed_tokens.weight"] @ reference_hidden(w, ids)[-1]
    return out


def reference_greedy(w: dict[str, np.ndarray], ids: list[int]) -> list[int]:
    tokens: list[int] = []
    for _ in range(STEPS):
        tokens.append(int(reference_logits(w, ids + tokens).argmax()))
    return tokens


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return {name: t.astype(np.float64) for name, t in make_weights().items()}


# -- llama.cpp --------------------------------------------------------------------


def test_llamacpp_logits_and_greedy_tokens_match_numpy(
    llm: tuple[str, Any], weights: dict[str, np.ndarray]
) -> None:
    kv_cache, solo = llm
    ids = llama_tokens(solo, PROMPT)
    first, tokens = llama_greedy(solo, ids)
    want = reference_logits(weights, ids)
    spread = float(want.std())
    assert spread > 1.0, "logits too flat for argmax to be meaningful"
    # F32 KV cache: float32 rounding only (~1e-6 of the spread seen); F16: its
    # rounding of K and V as well (~3e-4 seen).
    tolerance = 1e-4 if kv_cache == "f32" else 3e-3
    assert np.abs(first - want).max() < tolerance * spread
    assert tokens == reference_greedy(weights, ids)
    assert len(set(tokens)) >= STEPS // 2, f"greedy decoding loops: {tokens}"


def test_hearths_llamacpp_backend_decodes_the_numpy_tokens_solo_and_batched(
    llama: Backend, weights: dict[str, np.ndarray]
) -> None:
    prompts = [
        llama.tokenize(PROMPT, add_special=False),
        llama.tokenize("def add(a, b):\n    return", add_special=False),
    ]
    expected = [reference_greedy(weights, p) for p in prompts]
    assert [generate(llama, [p], first_id=10 + i)[0] for i, p in enumerate(prompts)] == (expected)
    assert generate(llama, prompts, first_id=20) == expected


def test_the_gguf_build_is_deterministic(tiny_gguf: Path, tmp_path: Path) -> None:
    again = build_tiny_gguf(tmp_path / tiny_gguf.name)
    assert (
        hashlib.sha256(again.read_bytes()).digest()
        == hashlib.sha256(tiny_gguf.read_bytes()).digest()
    )


def test_these_tests_run_where_mlx_is_not_installed(tmp_path: Path) -> None:
    """With MLX and the Hugging Face libraries unimportable, hearth's llama.cpp backend
    test on the tiny model passes; it does not skip."""
    decodes = test_hearths_llamacpp_backend_decodes_the_numpy_tokens_solo_and_batched
    blocked = ", ".join(repr(m) for m in MLX_AND_HF)
    run = (
        f"import sys; sys.modules.update(dict.fromkeys([{blocked}])); import pytest; "
        f"sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', '-rs', '--basetemp', "
        f"{str(tmp_path / 'inner')!r}, '{__file__}::{decodes.__name__}']))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", run], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b1 passed\b", done.stdout) and "skipped" not in done.stdout, done.stdout
