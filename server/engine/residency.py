"""Which models stay loaded: each model's memory footprint, the budget they share, how
long an idle one stays (keep-alive), and which idle ones to unload to make room.

Pure policy, no I/O but reading a model's header or config to size it; the hub
(:mod:`server.engine.hub`) acts on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from server.config import FOREVER, ModelConfig

__all__ = ["COMPUTE_BYTES", "FOREVER", "Resident", "footprint", "make_room"]

COMPUTE_BYTES = 512 * 2**20  # llama.cpp's compute buffers and the runner's interpreter


def footprint(config: ModelConfig) -> int:
    """Bytes the model takes once loaded: weights, KV cache for its whole context, and a
    compute allowance. Sized from the GGUF header or the MLX config, not by loading."""
    path = config.path
    if path.exists() and not path.is_dir() and not path.is_file():
        return COMPUTE_BYTES  # a pipe or device: reading its header here would block
    if path.is_dir():
        from backends.mlx import load as mlx_load

        plan = mlx_load.plan(path)
        kv = plan.kv_bytes_per_token * config.context_length
        return int(plan.weights_bytes + kv + COMPUTE_BYTES)
    from backends.llamacpp import offload

    _, gguf = offload.plan_model(config, ())
    draft = config.speculative.draft_model if config.speculative else None
    if draft is not None:  # the draft model's weights and KV for the same context
        draft_config = dataclasses.replace(config, path=draft, speculative=None)
        return footprint(draft_config) + int(_size(path) + gguf.kv_bytes)
    return int(_size(path) + gguf.kv_bytes + COMPUTE_BYTES)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@dataclass(frozen=True, slots=True)
class Resident:
    """A loaded model as the budget sees it."""

    name: str
    bytes: int
    idle: bool  # loaded and serving nothing
    last_used: float  # time.monotonic() of its last request's end


def make_room(residents: Sequence[Resident], need: int, budget: int) -> list[str] | None:
    """The idle models to unload, least recently used first, so that ``need`` more
    bytes fit in ``budget``; ``[]`` when it fits already, ``None`` when even unloading
    every idle model would not make room (busy models are never chosen)."""
    used = sum(r.bytes for r in residents)
    if used + need <= budget:
        return []
    chosen = []
    for r in sorted((r for r in residents if r.idle), key=lambda r: r.last_used):
        chosen.append(r.name)
        used -= r.bytes
        if used + need <= budget:
            return chosen
    return None
