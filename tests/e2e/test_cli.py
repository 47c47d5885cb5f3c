"""The hearth command as a user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import HEARTH, MODELS_FILE

pytestmark = pytest.mark.e2e


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(HEARTH), "--models-file", str(MODELS_FILE), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_pull_of_a_present_model_does_nothing() -> None:
    result = hearth("pull", "default")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("qwen2.5-coder-0.5b: ")
    assert "pulling" not in result.stderr


def test_pull_of_an_unknown_model_fails() -> None:
    result = hearth("pull", "no-such-model")
    assert result.returncode == 1
    assert "no model 'no-such-model'" in result.stderr


def test_models_lists_both_and_marks_the_default() -> None:
    result = hearth("models")
    assert result.returncode == 0
    assert "* qwen2.5-coder-0.5b (aliases: qwen2.5-coder, default, qwen2.5-coder:0.5b)" in (
        result.stdout
    )
    assert "gemma-3-270m" in result.stdout and "[present]" in result.stdout


def test_info_explains_the_backend_choice() -> None:
    result = hearth("info")
    assert result.returncode == 0
    out = result.stdout
    assert "physical cores" in out
    assert "llamacpp: available" in out
    assert "qwen2.5-coder-0.5b: llamacpp (auto: GGUF file)" in out


def test_a_broken_models_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[models.m]\npath = "a"\ncontext_length = -5\n')
    result = subprocess.run(
        [str(HEARTH), "--models-file", str(bad), "models"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "model 'm': key 'context_length'" in result.stderr
    assert "Traceback" not in result.stderr
