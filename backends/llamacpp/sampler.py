"""One sequence's sampler, and compiled grammars kept for reuse.

A sequence samples with a llama.cpp sampler chain (bans, penalties, truncation, the
draw). A constrained one also has a grammar, which is checked *after* the draw, as
llama.cpp's own common sampler does: the drawn token alone is offered to the grammar,
and only when the grammar refuses it is the whole vocabulary filtered by the grammar
and the chain run again. Filtering first would walk every one of the model's ~150,000
tokens through the grammar at every step; a JSON answer's drawn token is nearly always
allowed. A token the grammar allows keeps the probability the chain gave it; a refused
draw is redrawn from what the grammar allows.

Once the grammar is complete (a whole JSON value) it allows only an end-of-generation
token, and the sequence ends there even under ``ignore_eos``: llama.cpp aborts the
process when a grammar is given a token it does not allow, so no token the grammar
refused is ever accepted.

Grammars are compiled (GBNF parsed) once per constraint and cloned per sequence.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import llama_cpp as ll
import numpy as np

from backends.base import Constraint, GrammarError, SamplingParams
from backends.llamacpp import native
from backends.llamacpp.grammars import CACHE_SIZE, to_gbnf

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(ll.llama_token_data)


class Grammars:
    """Compiled grammars by constraint, least recently used dropped past ``CACHE_SIZE``."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._compiled: OrderedDict[Constraint, Any] = OrderedDict()

    def compiled(self, constraint: Constraint) -> Any:
        """The grammar sampler for ``constraint``, compiled once; raises GrammarError."""
        grammar = self._compiled.get(constraint)
        if grammar is not None:
            self._compiled.move_to_end(constraint)
            return grammar
        grammar = native.grammar_sampler(self._vocab, to_gbnf(constraint))
        if grammar is None:
            raise GrammarError("llama.cpp could not parse the grammar for this schema")
        self._compiled[constraint] = grammar
        if len(self._compiled) > CACHE_SIZE:
            ll.llama_sampler_free(self._compiled.popitem(last=False)[1])
        return grammar

    def fresh(self, constraint: Constraint) -> Any:
        """A grammar for one sequence, in its start state."""
        return ll.llama_sampler_clone(self.compiled(constraint))

    def close(self) -> None:
        while self._compiled:
            ll.llama_sampler_free(self._compiled.popitem()[1])


class Sampler:
    """One sequence's chain and optional grammar (see the module docstring)."""

    def __init__(
        self,
        sampling: SamplingParams,
        n_vocab: int,
        seed: int,
        eog: Sequence[int],
        grammar: Any = None,
    ) -> None:
        self._chain = native.make_sampler(sampling, n_vocab, seed, list(eog))
        self._grammar = grammar  # owned from here on
        self._eog = np.asarray(eog, dtype=np.int64)
        if grammar is not None:
            self._n_vocab = n_vocab
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._all = np.empty(n_vocab, dtype=_TOKEN_DATA)
            self._one = np.empty(1, dtype=_TOKEN_DATA)
            self._not_eog = np.ones(n_vocab, dtype=bool)
            self._not_eog[self._eog] = False

    def sample(self, ctx: Any, index: int) -> int:
        """The next token from the logits at batch ``index``; accepted by the chain (and
        the grammar) already."""
        if self._grammar is None:
            return int(ll.llama_sampler_sample(self._chain, ctx, index))
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, index), (self._n_vocab,))
        token = self._draw(logits, grammar_first=False)
        if not self._allows(token, float(logits[token])):
            token = self._draw(logits, grammar_first=True)
        if token not in self._eog:
            ll.llama_sampler_accept(self._grammar, token)
        ll.llama_sampler_accept(self._chain, token)
        return token

    def _draw(self, logits: np.ndarray[Any, Any], *, grammar_first: bool) -> int:
        cand = self._all
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        array = _array(cand)
        if grammar_first:
            ll.llama_sampler_apply(self._grammar, ctypes.byref(array))
            if not np.isfinite(cand["logit"][self._not_eog]).any():
                return int(self._eog[0])  # complete: only an end is allowed
        ll.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _allows(self, token: int, logit: float) -> bool:
        one = self._one
        one[0] = (token, logit, 0.0)
        ll.llama_sampler_apply(self._grammar, ctypes.byref(_array(one)))
        return bool(np.isfinite(one["logit"][0]))

    def free(self) -> None:
        ll.llama_sampler_free(self._chain)
        if self._grammar is not None:
            ll.llama_sampler_free(self._grammar)


def _array(cand: np.ndarray[Any, Any]) -> Any:
    data = cand.ctypes.data_as(ctypes.POINTER(ll.llama_token_data))
    return ll.llama_token_data_array(data, cand.size, -1, False)
