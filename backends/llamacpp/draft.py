"""A draft model: a smaller model with the target's tokenizer guesses the next tokens.

It has a context of its own with one llama.cpp sequence per target slot, holding the
tokens of that slot's sequence as far as the draft model has read them. To draft, each
sequence's missing tokens are fed first (the prompt, on the first draft; the tokens
accepted since, later), in passes shared by every sequence that drafts this step; then
the draft model writes greedily, one pass per draft position, all sequences together.
Tokens it guessed that the target refused are cut from its KV on the next draft, by the
common prefix of what it holds and what the sequence now is. A guess is stopped early
where the draft model itself is unsure (its top probability below ``P_MIN``), since a
guess the target will refuse only costs.

Greedy drafts are what keeps the target's output exact: a deterministic guess is
checked by sampling each position with the target's own sampler and keeping the guess
only where they agree (``backends.base.Backend.step``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import LoadRequest, ModelLoadError
from backends.llamacpp import native
from backends.tokens import common_prefix

log = logging.getLogger("hearth.llamacpp")
P_MIN = 0.4  # the draft model's top probability below which it stops guessing
_CHECK_STRIDE = 97  # tokenizer check: every 97th token's text, and the special ones


class DraftModel:
    """The draft model's weights, context and per-slot tokens (see the module docstring)."""

    def __init__(
        self,
        ll: Any,
        path: Path,
        request: LoadRequest,
        n_slots: int,
        target_vocab: Any,
        flash_attn_type: int,
    ) -> None:
        self._ll = ll
        params = ll.llama_model_default_params()
        params.n_gpu_layers = 0 if request.gpu_layers == 0 else 999
        self._model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ModelLoadError(f"llama.cpp could not load the draft model {path}")
        self._vocab = ll.llama_model_get_vocab(self._model)
        try:
            same_tokenizer(ll, target_vocab, self._vocab, path)
        except ModelLoadError:
            ll.llama_model_free(self._model)
            raise
        self._n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = request.context_length
        self._capacity = max(request.batch_tokens, n_slots)
        cparams.n_batch = self._capacity
        cparams.n_ubatch = min(self._capacity, 512)
        cparams.n_seq_max = n_slots
        cparams.kv_unified = True
        threads = request.threads or os.cpu_count() or 1
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        cparams.flash_attn_type = flash_attn_type  # as the model's own context
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise ModelLoadError(
                f"no memory for the draft model's context ({request.context_length} tokens)"
            )
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = native.Batch(self._capacity)
        self._held: list[list[int]] = [[] for _ in range(n_slots)]
        self.kv_bytes = ll.llama_state_get_size(self._ctx)

    def draft(self, wanted: Sequence[tuple[int, Sequence[int], int]]) -> dict[int, list[int]]:
        """Guess up to ``k`` tokens after ``history`` for each ``(slot, history, k)``;
        returns the guesses by slot (empty where the model was unsure at once)."""
        ll = self._ll
        # Catch up: feed what each slot lacks, all but the last token of its history,
        # whose logits give the first guess below.
        pending: dict[int, list[int]] = {}
        for slot, history, _ in wanted:
            held = self._held[slot]
            keep = min(common_prefix(held, history), len(history) - 1)
            if keep < len(held):
                if not ll.llama_memory_seq_rm(self._mem, slot, keep, -1):
                    ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
                    keep = 0
                del held[keep:]
            pending[slot] = list(history[keep:])
        self._catch_up(pending)
        guesses: dict[int, list[int]] = {slot: [] for slot, _, _ in wanted}
        limit = {slot: k for slot, _, k in wanted}
        active = [slot for slot, _, k in wanted if k > 0]
        while active:
            self._batch.clear()
            index = {}
            for slot in active:
                token = pending[slot][0]
                index[slot] = self._batch.add(token, len(self._held[slot]), slot, True)
            if self._batch.decode(self._ctx) != 0:
                self.reset()  # a failed draft costs only the speculation
                return {slot: [] for slot, _, _ in wanted}
            still = []
            for slot in active:
                self._held[slot].append(pending[slot][0])
                token, p = self._top(index[slot])
                if p < P_MIN:
                    continue
                guesses[slot].append(token)
                pending[slot] = [token]
                if len(guesses[slot]) < limit[slot]:
                    still.append(slot)
            active = still
        return guesses

    def _catch_up(self, pending: dict[int, list[int]]) -> None:
        """Feed every slot's pending tokens but its last, in passes of the batch size."""
        rest = {slot: tokens[:-1] for slot, tokens in pending.items()}
        for slot, tokens in pending.items():
            pending[slot] = tokens[-1:]
        while any(rest.values()):
            self._batch.clear()
            fed: list[tuple[int, list[int]]] = []
            room = self._capacity
            for slot, tokens in rest.items():
                take = tokens[:room]
                start = len(self._held[slot])
                for i, token in enumerate(take):
                    self._batch.add(token, start + i, slot, False)
                room -= len(take)
                fed.append((slot, take))
                if room == 0:
                    break
            if self._batch.decode(self._ctx) != 0:
                self.reset()
                return
            for slot, take in fed:
                self._held[slot].extend(take)
                del rest[slot][: len(take)]

    def _top(self, index: int) -> tuple[int, float]:
        logits = np.ctypeslib.as_array(
            self._ll.llama_get_logits_ith(self._ctx, index), (self._n_vocab,)
        )
        token = int(np.argmax(logits))
        top = float(logits[token])
        p = 1.0 / float(np.exp(logits - top).sum())
        return token, p

    def forget(self, slot: int) -> None:
        """The target slot was cleared or reused from its start."""
        if self._held[slot]:
            self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
            self._held[slot].clear()

    def reset(self) -> None:
        for slot in range(len(self._held)):
            self.forget(slot)

    def close(self) -> None:
        if self._ctx is not None:
            self._batch.free()
            self._ll.llama_free(self._ctx)
            self._ll.llama_model_free(self._model)
            self._ctx = None


def same_tokenizer(ll: Any, target: Any, draft: Any, path: Path) -> None:
    """Refuse a draft model whose tokenizer differs from the target's: the same vocabulary
    size, special tokens, and text of every ``_CHECK_STRIDE``-th token."""
    n = ll.llama_vocab_n_tokens(target)
    if ll.llama_vocab_n_tokens(draft) != n:
        raise ModelLoadError(
            f"the draft model {path.name} has {ll.llama_vocab_n_tokens(draft)} tokens and the "
            f"model {n}: a draft model needs the same tokenizer"
        )
    specials = ("bos", "eos", "eot", "fim_pre", "fim_suf", "fim_mid")
    for name in specials:
        get = getattr(ll, f"llama_vocab_{name}")
        if get(target) != get(draft):
            raise ModelLoadError(
                f"the draft model {path.name} has another {name} token: it needs the same "
                "tokenizer as the model"
            )
    for token in range(0, n, _CHECK_STRIDE):
        if native.piece(target, token, special=True) != native.piece(draft, token, special=True):
            raise ModelLoadError(
                f"the draft model {path.name} writes token {token} differently: it needs the "
                "same tokenizer as the model"
            )
