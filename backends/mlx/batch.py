"""The MLX decode batch: decoding sequences' KV caches merged into one batched cache.

A sequence prefills alone in its own mlx-lm cache; once it samples its first token it
joins the batch (its cache merged into the batched one, left-padded), and from then on
one forward pass advances every member. Leaving filters its row out; a leaving
sequence's cache can be extracted first, to keep it as a reusable prefix.

Memory: the batched cache is one rectangle per layer, rows x width, every row padded on
the left to the longest sequence, and it grows ``ALLOC_STEP`` positions at a time for
every row at once. One 30,000-token sequence beside seven short ones therefore holds
8 x 30,000 positions, not 30,000 plus a little. The backend counts that: its KV in use
is the bytes its caches really hold, and before a sequence is added or the batch grows
it checks :func:`padded_width` for every active sequence as a row, refusing (a
retryable out-of-memory) what would not fit. Grouping sequences of unlike length into
separate batches would waste less, at one forward pass per group each step; counting
the rectangle is the simple rule that is always right.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

ALLOC_STEP = 256  # mlx-lm's KVCache.step: positions added to every row when it grows


def padded_width(width: int, lengths: Collection[int]) -> int:
    """The batch's width once sequences of ``lengths`` tokens (prompt and generated,
    the next token to feed included) are all rows: ``width`` (allocated now) while it
    holds the longest, else grown by one step past the longest's cached tokens."""
    longest = max(lengths, default=0)
    return width if longest <= width else longest - 1 + ALLOC_STEP


class DecodeBatch:
    """Rows of decoding sequences and their batched cache (one per model layer)."""

    def __init__(self) -> None:
        self.rows: list[int] = []  # sequence ids, in cache row order
        self._cache: list[Any] | None = None

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self.rows

    def join(self, seq_id: int, cache: list[Any]) -> None:
        """Add a prefilled sequence; its own cache is merged in (a copy)."""
        merged = [type(layer).merge([layer]) for layer in cache]
        if self._cache is None:
            self._cache = merged
        else:
            for batch_layer, layer in zip(self._cache, merged, strict=True):
                batch_layer.extend(layer)
        self.rows.append(seq_id)

    def leave(self, seq_ids: Sequence[int], *, extract: bool = False) -> dict[int, list[Any]]:
        """Remove rows; with ``extract``, return their caches as single-sequence caches."""
        gone = [s for s in seq_ids if s in self.rows]
        if not gone or self._cache is None:
            return {}
        out = {}
        if extract:
            out = {s: [layer.extract(self.rows.index(s)) for layer in self._cache] for s in gone}
        keep = [i for i, s in enumerate(self.rows) if s not in gone]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = None
        else:
            for layer in self._cache:
                layer.filter(keep)
        return out

    def forward(self, model: Any, tokens: Sequence[int]) -> Any:
        """One decode step: ``tokens`` holds each row's last token, in row order.
        Returns the last-position logits, one row per sequence (lazy)."""
        import mlx.core as mx

        inputs = mx.array([[t] for t in tokens])
        return model(inputs, cache=self._cache)[:, -1, :]

    def state(self) -> list[Any]:
        """The arrays to evaluate with the step's logits."""
        return [layer.state for layer in self._cache or []]

    def nbytes(self) -> int:
        """Bytes the batched cache holds: every row at the full width."""
        return sum(layer.nbytes for layer in self._cache or [])

    def width(self) -> int:
        """Positions allocated per row (the longest layer's)."""
        return max(
            (layer.keys.shape[2] for layer in self._cache or [] if layer.keys is not None),
            default=0,
        )
