"""Token sampling in NumPy, for backends whose engine gives logits but no sampler (MLX).

The chain follows llama.cpp's, so the same settings mean the same thing on every
backend: end-of-generation ban (``ignore_eos``), presence and frequency penalties over
the last generated tokens, then greedy, or top-k, top-p, min-p, temperature and a draw
from a per-sequence generator (seeded when the request gives a seed).

As in llama.cpp, a ``top_k`` at or above the number of logits cuts nothing. A seed is
any 64-bit integer, negative included (the API's range); NumPy's generator takes only
non-negative seeds, so a seed is read as its unsigned 64-bit pattern: the same seed
always gives the same generator and two seeds in the range never share one.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection

import numpy as np
import numpy.typing as npt

from backends.base import SamplingParams

PENALTY_WINDOW = 256  # llama.cpp's penalty_last_n as hearth configures it
SEED_BITS = (1 << 64) - 1


class TokenSampler:
    """One sequence's sampler: call :meth:`sample` with that sequence's last logits."""

    def __init__(self, params: SamplingParams, eog: Collection[int], seed: int) -> None:
        self._params = params
        self._ban = np.fromiter(eog, dtype=np.int64) if params.ignore_eos else None
        self._rng = np.random.default_rng(seed & SEED_BITS)
        self._recent: deque[int] = deque(maxlen=PENALTY_WINDOW)
        self._counts: Counter[int] = Counter()

    def sample(self, logits: npt.NDArray[np.floating]) -> int:
        """Pick the next token and remember it for the penalties."""
        x = np.array(logits, dtype=np.float64)  # a copy: bans and penalties write to it
        if self._ban is not None and self._ban.size:
            x[self._ban] = -np.inf
        self._penalize(x)
        token = int(np.argmax(x)) if self._params.greedy else self._draw(x)
        self._remember(token)
        return token

    def _penalize(self, x: npt.NDArray[np.float64]) -> None:
        p = self._params
        if not (p.presence_penalty or p.frequency_penalty) or not self._counts:
            return
        ids = np.fromiter(self._counts.keys(), dtype=np.int64)
        counts = np.fromiter(self._counts.values(), dtype=np.float64)
        x[ids] -= counts * p.frequency_penalty + p.presence_penalty

    def _remember(self, token: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        self._recent.append(token)
        self._counts[token] += 1

    def _draw(self, x: npt.NDArray[np.float64]) -> int:
        p = self._params
        if 0 < p.top_k < x.size:
            ids = np.argpartition(-x, p.top_k - 1)[: p.top_k]
        else:
            ids = np.arange(x.size)
        ids = ids[np.isfinite(x[ids])]
        if ids.size == 0:
            return int(np.argmax(x))
        ids = ids[np.argsort(-x[ids], kind="stable")]
        logits = x[ids]
        probs = _softmax(logits)
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
            ids, logits, probs = ids[:keep], logits[:keep], probs[:keep]
        if p.min_p > 0.0:
            keep = max(1, int(np.count_nonzero(probs >= p.min_p * probs[0])))
            ids, logits = ids[:keep], logits[:keep]
        final = _softmax(logits / max(p.temperature, 1e-6))
        return int(ids[self._rng.choice(ids.size, p=final)])


def _softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(x - x.max())
    out: npt.NDArray[np.float64] = e / e.sum()
    return out
