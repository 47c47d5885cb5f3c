"""Prompt lookup: draft tokens from n-grams of the sequence's own text, no model needed.

An editor's edit request mostly copies its prompt, and code repeats itself; where the
last ``n`` tokens of a sequence (prompt and output so far) appeared before, the tokens
that followed them then are a good guess of what follows now. The longest matching
n-gram wins (from ``n_max`` down to ``n_min``), and among its occurrences the latest,
as the text just before is the likeliest to be copied on.

The index is kept per sequence and grows with it: each token appended costs one dict
update per n-gram length, so a lookup is O(1) whatever the length of the prompt.
Shared by every backend; it knows tokens only.
"""

from __future__ import annotations

from collections.abc import Iterable


class NgramIndex:
    """The n-grams of one growing token sequence, and where each last occurred."""

    __slots__ = ("_ends", "_n_max", "_n_min", "_prev", "tokens")

    def __init__(self, n_min: int = 2, n_max: int = 4) -> None:
        if not 1 <= n_min <= n_max:
            raise ValueError("need 1 <= n_min <= n_max")
        self._n_min, self._n_max = n_min, n_max
        self.tokens: list[int] = []
        # For each n: n-gram -> the index just past its latest occurrence.
        self._ends: list[dict[tuple[int, ...], int]] = [{} for _ in range(n_max + 1)]
        # For each n: where the current last n-gram occurred before (the index just past
        # that earlier occurrence), or -1.
        self._prev = [-1] * (n_max + 1)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens)
            for n in range(self._n_min, min(self._n_max, end) + 1):
                gram = tuple(self.tokens[end - n : end])
                ends = self._ends[n]
                self._prev[n] = ends.get(gram, -1)
                ends[gram] = end

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the longest latest earlier occurrence of the
        sequence's last n-gram; none where no n-gram of ``n_min`` tokens or more recurs."""
        if k <= 0:
            return []
        for n in range(min(self._n_max, len(self.tokens)), self._n_min - 1, -1):
            start = self._prev[n]
            if start >= 0:
                return self.tokens[start : start + k]
        return []
