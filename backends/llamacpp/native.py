"""Thin wrappers over llama-cpp-python's low-level ctypes bindings.

Only the llama.cpp backend imports this module, and only from its engine thread.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import llama_cpp as ll

from backends.base import SamplingParams

log = logging.getLogger("hearth.llamacpp")

_LEVELS = {2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}


@ll.llama_log_callback  # type: ignore[untyped-decorator]
def _log_callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    py_level = _LEVELS.get(level, logging.DEBUG)
    if log.isEnabledFor(py_level):
        log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip())


def init_logging() -> None:
    """Route llama.cpp's log through Python logging (it prints to stderr otherwise)."""
    ll.llama_log_set(_log_callback, ctypes.c_void_p(0))


def tokenize(vocab: Any, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
    data = text.encode("utf-8")
    capacity = len(data) + 8
    buf = (ll.llama_token * capacity)()
    n = ll.llama_tokenize(vocab, data, len(data), buf, capacity, add_special, parse_special)
    if n < 0:
        capacity = -n
        buf = (ll.llama_token * capacity)()
        n = ll.llama_tokenize(vocab, data, len(data), buf, capacity, add_special, parse_special)
    return list(buf[:n])


def piece(vocab: Any, token: int, *, special: bool = False) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = ll.llama_token_to_piece(vocab, token, buf, 64, 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = ll.llama_token_to_piece(vocab, token, buf, -n, 0, special)
    return buf.raw[:n]


def meta_string(model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(1 << 16)
    n = ll.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    if n < 0:
        return None
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        ll.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace")


def eog_tokens(vocab: Any) -> list[int]:
    return [t for t in range(ll.llama_vocab_n_tokens(vocab)) if ll.llama_vocab_is_eog(vocab, t)]


def grammar_sampler(vocab: Any, grammar: str) -> Any:
    """A grammar sampler, or ``None`` where llama.cpp's parser rejects the grammar."""
    return ll.llama_sampler_init_grammar(vocab, grammar.encode(), b"root") or None


def make_sampler(sampling: SamplingParams, n_vocab: int, seed: int, eog: list[int]) -> Any:
    """A sampler chain for one sequence: bans, penalties, truncation, then the draw.
    A grammar is checked apart from it (``backends.llamacpp.sampler``)."""
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    add = ll.llama_sampler_chain_add
    if sampling.ignore_eos and eog:
        bias = (ll.llama_logit_bias * len(eog))()
        for i, token in enumerate(eog):
            bias[i].token = token  # type: ignore[assignment]
            bias[i].bias = float("-inf")
        add(chain, ll.llama_sampler_init_logit_bias(n_vocab, len(eog), bias))
    if sampling.presence_penalty or sampling.frequency_penalty:
        add(
            chain,
            ll.llama_sampler_init_penalties(
                n_vocab, 256, 1.0, sampling.frequency_penalty, sampling.presence_penalty
            ),
        )
    if sampling.greedy:
        add(chain, ll.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        add(chain, ll.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        add(chain, ll.llama_sampler_init_top_p(sampling.top_p, 1))
    if sampling.min_p > 0.0:
        add(chain, ll.llama_sampler_init_min_p(sampling.min_p, 1))
    add(chain, ll.llama_sampler_init_temp(sampling.temperature))
    add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


class Batch:
    """A reusable llama_batch of up to ``capacity`` tokens, one sequence id each."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batch = ll.llama_batch_init(capacity, 0, 1)
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self._batch, self.n
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        self.n += 1
        return i

    def decode(self, ctx: Any) -> int:
        self._batch.n_tokens = self.n
        return int(ll.llama_decode(ctx, self._batch))

    def free(self) -> None:
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
