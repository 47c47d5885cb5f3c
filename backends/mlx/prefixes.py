"""Finished sequences' KV, kept for the next request that starts with the same tokens.

At most ``entries`` are kept, least recently used dropped first; an entry a newer one
extends is superseded. The backend evicts entries when memory is needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from backends.tokens import common_prefix


@dataclass(slots=True)
class Prefix:
    tokens: list[int]
    cache: list[Any]  # one single-sequence KV cache per model layer
    last_used: float


class PrefixCache:
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: list[Prefix] = []

    def __iter__(self) -> Iterator[Prefix]:
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def best(self, prompt: Sequence[int]) -> tuple[Prefix | None, int]:
        """The entry sharing the most leading tokens with ``prompt``, and how many it
        lends: never the whole prompt, so its last token is fed for fresh logits."""
        best, best_len = None, 0
        for entry in self._items:
            n = common_prefix(entry.tokens, prompt)
            if n > best_len:
                best, best_len = entry, n
        if best is not None:
            best.last_used = time.monotonic()
        return best, min(best_len, len(prompt) - 1)

    def remember(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep a finished sequence's KV; an entry it extends is superseded."""
        self._items = [p for p in self._items if common_prefix(p.tokens, tokens) < len(p.tokens)]
        self._items.append(Prefix(tokens, cache, time.monotonic()))
        self._items.sort(key=lambda p: p.last_used)
        del self._items[: max(0, len(self._items) - self.entries)]

    def evict_oldest(self) -> None:
        """Drop the least recently used entry."""
        self._items.sort(key=lambda p: p.last_used)
        self._items.pop(0)

    def clear(self) -> None:
        self._items.clear()
