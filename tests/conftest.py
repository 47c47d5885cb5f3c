"""Session fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.tiny_model import DEFAULT_TOKENIZER_GGUF, TinyModel, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A tiny random Qwen2 (HF, F32 GGUF and MLX formats), built once per session."""
    pytest.importorskip("mlx_lm", reason="the MLX copy of the tiny model needs mlx_lm")
    if not DEFAULT_TOKENIZER_GGUF.is_file():
        pytest.skip(f"the tiny model takes its tokenizer from {DEFAULT_TOKENIZER_GGUF}, absent")
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), DEFAULT_TOKENIZER_GGUF)
