"""llama.cpp's limit of 256 sequences per context, against max_sequences and the
prefix slots that hearth adds beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import ModelLoadError
from tests.backends.drive import request as load_request


def load(path: Path, **overrides: object) -> object:
    from backends.llamacpp.backend import LlamaCppPlugin

    return LlamaCppPlugin().load(load_request(path, **overrides))


def test_more_sequences_than_llama_cpp_holds_is_named(tiny_gguf: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"max_sequences = 300 .* llama\.cpp's 256"):
        load(tiny_gguf, max_sequences=300, context_length=4096)


def test_asked_for_prefix_slots_past_the_limit_are_named(tiny_gguf: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"prefix_cache_slots \(100\) .* 256"):
        load(tiny_gguf, max_sequences=200, context_length=4096,
             options={"prefix_cache_slots": 100})  # fmt: skip


def test_default_prefix_slots_fit_in_what_is_left(tiny_gguf: Path) -> None:
    backend = load(tiny_gguf, max_sequences=200, context_length=4096)
    try:
        assert backend.capabilities.max_sequences == 200  # type: ignore[attr-defined]
        assert len(backend._slots) == 256  # type: ignore[attr-defined]
    finally:
        backend.close()  # type: ignore[attr-defined]
