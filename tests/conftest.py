"""Session fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_model import (
    DEFAULT_TOKENIZER_GGUF,
    GGUF_NAME,
    TinyModel,
    build_tiny_gguf,
    build_tiny_model,
)


def _need_tokenizer_source() -> None:
    if not DEFAULT_TOKENIZER_GGUF.is_file():
        pytest.skip(f"the tiny model takes its tokenizer from {DEFAULT_TOKENIZER_GGUF}, absent")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen2 as an F32 GGUF for llama.cpp, built once per session with
    numpy and gguf alone: the llama.cpp tests on it run where MLX is not installed."""
    _need_tokenizer_source()
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / GGUF_NAME)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny random Qwen2 in all three formats (HF, F32 GGUF, MLX), built once per
    session, for the tests that compare the MLX copy with the GGUF."""
    pytest.importorskip(
        "mlx_lm",
        reason="the MLX copy of the tiny model is converted by mlx_lm (pip install "
        "'hearth[mlx]'); the llama.cpp tests use the tiny_gguf fixture and run without it",
    )
    _need_tokenizer_source()
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), DEFAULT_TOKENIZER_GGUF)
