"""Fill-in-the-middle prompts assembled from a model's own FIM token ids.

The order is prefix-suffix-middle (Qwen2.5-Coder, StarCoder, CodeLlama's PSM). Context
from other files goes first, in Qwen's repository-level layout when the model has the
repo and file-separator tokens, else as plain text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backends.base import FimUnsupported

REPO_NAME = "repo"


@dataclass(frozen=True, slots=True)
class FimTokens:
    """A vocabulary's FIM token ids; ``-1`` where the model has none."""

    prefix: int
    suffix: int
    middle: int
    repo: int = -1
    file_sep: int = -1

    @property
    def supported(self) -> bool:
        return min(self.prefix, self.suffix, self.middle) >= 0


def fim_prompt(
    tokens: FimTokens,
    tokenize: Callable[[str], list[int]],
    prefix: str,
    suffix: str,
    extra: Sequence[tuple[str, str]] = (),
    *,
    bos: Sequence[int] = (),
) -> list[int]:
    """``tokenize`` must not parse special tokens: text cannot forge a FIM token."""
    if not tokens.supported:
        raise FimUnsupported("this model has no fill-in-the-middle tokens")
    out = list(bos)
    if extra:
        out += _extra(tokens, tokenize, extra)
    out += [tokens.prefix, *tokenize(prefix), tokens.suffix, *tokenize(suffix), tokens.middle]
    return out


def _extra(
    tokens: FimTokens, tokenize: Callable[[str], list[int]], extra: Sequence[tuple[str, str]]
) -> list[int]:
    repo_level = tokens.repo >= 0 and tokens.file_sep >= 0
    out = [tokens.repo, *tokenize(REPO_NAME + "\n")] if repo_level else []
    for filename, text in extra:
        body = text if text.endswith("\n") else text + "\n"
        if repo_level:
            out += [tokens.file_sep, *tokenize(f"{filename}\n{body}")]
        else:
            out += tokenize(f"# {filename}\n{body}" if filename else body)
    if repo_level:
        out += [tokens.file_sep, *tokenize("\n")]
    return out
