"""Fixtures of the backend tests: llama.cpp on the tiny model's GGUF, needing no MLX."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.base import Backend
from tests.backends.drive import request as load_request
from tests.solo_llama import solo_llama

GGML_TYPE_F32 = 0


@pytest.fixture(scope="module", params=["f32", "f16"])
def llm(request: pytest.FixtureRequest, tiny_gguf: Path) -> Iterator[tuple[str, Any]]:
    """llama-cpp-python's ``Llama`` on the tiny GGUF (loaded as hearth would load it on
    this CPU), with an F32 KV cache, then with llama.cpp's default F16 one."""
    kv = GGML_TYPE_F32 if request.param == "f32" else None
    llm = solo_llama(
        model_path=str(tiny_gguf), n_ctx=256, logits_all=True, type_k=kv, type_v=kv, verbose=False
    )
    yield request.param, llm
    llm.close()


@pytest.fixture(scope="module")
def llama(tiny_gguf: Path) -> Iterator[Backend]:
    """hearth's llama.cpp backend on the tiny GGUF."""
    from backends.llamacpp.backend import LlamaCppPlugin

    backend = LlamaCppPlugin().load(load_request(tiny_gguf))
    yield backend
    backend.close()
