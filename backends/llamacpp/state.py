"""A llama.cpp sequence's KV state as bytes, for the prompt store
(:mod:`backends.prompt_store`): copied out when a sequence ends, copied into a free
slot when a later prompt starts with the same tokens."""

from __future__ import annotations

import ctypes
from typing import Any


def read(ll: Any, ctx: Any, seq: int) -> bytearray | None:
    """The sequence's state (its KV cells and their positions); None when empty.
    Written straight into the buffer returned (a large one is mapped, not zeroed)."""
    size = ll.llama_state_seq_get_size(ctx, seq)
    if not size:
        return None
    out = bytearray(size)
    written = ll.llama_state_seq_get_data(ctx, (ctypes.c_uint8 * size).from_buffer(out), size, seq)
    if not written:
        return None
    del out[written:]
    return out


def write(ll: Any, ctx: Any, seq: int, state: bytes | bytearray) -> bool:
    """Restore ``state`` into the (empty) sequence; False when llama.cpp refuses it
    (no room in the KV cache, a state from another layout)."""
    array = ctypes.c_uint8 * len(state)
    buf = (
        array.from_buffer(state) if isinstance(state, bytearray) else array.from_buffer_copy(state)
    )
    return bool(ll.llama_state_seq_set_data(ctx, buf, len(state), seq))
