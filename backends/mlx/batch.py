"""The MLX decode batch: decoding sequences' KV caches merged into one batched cache.

A sequence prefills alone in its own mlx-lm cache; once it samples its first token it
joins the batch (its cache merged into the batched one, left-padded), and from then on
one forward pass advances every member. Leaving filters its row out; a leaving
sequence's cache can be extracted first, to keep it as a reusable prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
        return sum(layer.nbytes for layer in self._cache or [])
