"""FIM prompt assembly and the FIM fields of /v1/completions."""

from __future__ import annotations

import pytest

from backends.base import FimUnsupported, SamplingParams
from backends.fim import FimTokens, fim_prompt
from server.api.openai import schemas
from server.engine.requests import INTERACTIVE, Fim

PRE, SUF, MID, REPO, SEP = 1001, 1002, 1003, 1004, 1005


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_psm_order() -> None:
    tokens = fim_prompt(FimTokens(PRE, SUF, MID), chars, "ab", "cd", bos=[7])
    assert tokens == [7, PRE, *chars("ab"), SUF, *chars("cd"), MID]


def test_extra_in_repo_layout_before_the_prefix() -> None:
    tokens = fim_prompt(FimTokens(PRE, SUF, MID, REPO, SEP), chars, "p", "s", [("a.py", "x")])
    assert tokens == [
        REPO, *chars("repo\n"), SEP, *chars("a.py\nx\n"), SEP, *chars("\n"),
        PRE, *chars("p"), SUF, *chars("s"), MID,
    ]  # fmt: skip


def test_extra_as_text_without_repo_tokens() -> None:
    tokens = fim_prompt(FimTokens(PRE, SUF, MID), chars, "p", "s", [("a.py", "x\n")])
    assert tokens[: tokens.index(PRE)] == chars("# a.py\nx\n")


def test_no_fim_tokens_raises() -> None:
    with pytest.raises(FimUnsupported):
        fim_prompt(FimTokens(-1, -1, -1), chars, "p", "s")


def test_completion_suffix_makes_an_interactive_fim_request() -> None:
    body = {"model": "m", "prompt": "def f(", "suffix": "):"}
    gen = schemas.parse_completion(body, SamplingParams(), model="m").generation
    assert gen.fim == Fim("def f(", "):") and gen.prompt is None
    assert gen.priority == INTERACTIVE
    plain = schemas.parse_completion({"model": "m", "prompt": "x"}, SamplingParams(), model="m")
    assert plain.generation.priority == 0 and plain.generation.fim is None
