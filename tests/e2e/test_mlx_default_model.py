"""The real default model, converted from its GGUF to MLX, served by the mlx backend.

Opt-in and slow (MLX's CPU backend decodes this model at a few tokens a second on Linux):

    HEARTH_SLOW_TESTS=1 .venv/bin/python -m pytest tests/e2e/test_mlx_default_model.py

It needs the ``mlx`` extra in the server's venv and the converted folder
``qwen2.5-coder-0.5b-instruct-mlx`` in the model cache. Without the folder it is skipped,
unless HEARTH_CONVERT_PYTHON names a python that has torch, transformers, accelerate, gguf
and mlx-lm (made as ``bench/gguf_to_mlx.py`` says): then the test converts the GGUF first,
which takes a couple of minutes and about 2.5 GB of disk.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import openai
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("HEARTH_SLOW_TESTS") != "1", reason="set HEARTH_SLOW_TESTS=1"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("mlx_lm") is None, reason="needs pip install -e '.[mlx]'"
    ),
]

MLX_DIR = "qwen2.5-coder-0.5b-instruct-mlx"
CONVERT = Path(__file__).resolve().parents[2] / "bench" / "gguf_to_mlx.py"
PROMPT = "Write a Python function that adds two numbers."


def mlx_folder() -> Path:
    """The converted default model; converted here when HEARTH_CONVERT_PYTHON is set."""
    folder = default_cache_dir() / MLX_DIR
    if (folder / "config.json").is_file():
        return folder
    python = os.environ.get("HEARTH_CONVERT_PYTHON")
    if not python:
        pytest.skip(f"no {folder}: convert it with bench/gguf_to_mlx.py")
    gguf = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
    subprocess.run([python, str(CONVERT), str(gguf), str(folder)], check=True, timeout=1800)
    return folder


def test_mlx_serves_the_converted_default_model(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.coder-mlx]\npath = "{mlx_folder()}"\nbackend = "mlx"\n'
        "context_length = 2048\nmax_sequences = 2\n"
    )
    with (
        serve(tmp_path / "server.log", ("coder-mlx",), models) as base,
        openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as client,
    ):
        reply = client.chat.completions.create(
            model="coder-mlx",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=8,
            temperature=0,
            timeout=300,
        )
    choice = reply.choices[0]
    assert choice.message.content, reply
    assert choice.finish_reason == "length"
    # Greedy, the dequantized model starts as llama.cpp does on the GGUF.
    assert choice.message.content.startswith("Here's a simple Python function"), reply
    assert reply.usage is not None
    # Qwen's chat template with its default system prompt: the same 38 tokens as llama.cpp.
    assert reply.usage.prompt_tokens == 38
    assert reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens == 46
