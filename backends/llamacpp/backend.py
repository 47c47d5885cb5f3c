"""The llama.cpp backend, through llama-cpp-python's low-level bindings.

All sequences share one context with a unified KV cache; each sequence is a llama.cpp
sequence id ("slot"). A finished sequence's slot keeps its tokens as a cached prefix
until the slot or its cells are needed, so a request that continues it (the next chat
turn, an IDE resending a file) feeds only what differs; a request that shares only a
prefix with another slot (a new conversation with the same system prompt and tools)
shares those cells and leaves the other slot whole. Reuse stops where the memory does
not hold exactly the shared tokens (a sliding-window cache that gave old cells away, a
recurrent state): those prompts are prefilled afresh. A request with a ``seed`` is
always prefilled afresh, never from KV computed in another batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends import formats
from backends.base import (
    DRAFT_MODEL,
    GENERATE,
    NGRAM,
    Backend,
    Capabilities,
    ChatMessage,
    Constraint,
    Delta,
    FimUnsupported,
    LoadRequest,
    ModelLoadError,
    SamplingParams,
    StepFailure,
    TaskUnsupported,
    TemplateError,
    Tool,
    Work,
)
from backends.fim import FimTokens, fim_prompt
from backends.llamacpp import cpu, state
from backends.llamacpp import gpu as llamacpp_gpu
from backends.llamacpp.sampler import Grammars, Sampler
from backends.options import PrefixOptions, prefix_options
from backends.prompt_store import BLOCK, PromptStore, model_key
from backends.speculative import NgramIndex
from backends.templates import ChatTemplate
from backends.text import Utf8Stream
from backends.tokens import common_prefix

if TYPE_CHECKING:
    from backends.llamacpp.draft import DraftModel
    from backends.llamacpp.pooled import Pooler

log = logging.getLogger("hearth.llamacpp")
GGUF_MAGIC = b"GGUF"
MIN_REUSE = 16  # shared tokens below which a prefix is not worth reusing
MIN_SAVE = 2 * BLOCK  # tokens a finished sequence needs to be saved beyond the live KV


@dataclass(slots=True)
class _Slot:
    """One llama.cpp sequence id and the tokens whose KV it holds."""

    id: int
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    busy: bool = False


@dataclass(slots=True)
class _Seq:
    slot: _Slot
    pending: list[int]
    sampler: Sampler
    text: Utf8Stream
    ngrams: NgramIndex | None = None  # prompt lookup's index, made at the first draft


@dataclass(slots=True)
class _Verify:
    """A work item's place in the batch: the logits index of its last fed token, and
    the draft tokens fed after it, each with its own logits index."""

    index: int
    tokens: list[int]
    draft: list[int] = field(default_factory=list)
    drafter: str = ""


class LlamaCppPlugin:
    name = "llamacpp"

    def unavailable_reason(self) -> str | None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            return f"llama-cpp-python is not installed ({exc}); pip install llama-cpp-python"
        lacking = cpu.missing(build_features(), cpu.cpu_flags())
        if lacking:
            return (
                f"this llama-cpp-python was built for another CPU: it uses {', '.join(lacking)}, "
                "which this CPU lacks; rebuild it here with scripts/install"
            )
        return None

    def accepts(self, path: Path) -> bool:
        if path.is_dir():
            return False
        if path.suffix.lower() == ".gguf":
            return True
        try:
            with path.open("rb") as f:
                return f.read(4) == GGUF_MAGIC
        except OSError:
            return False

    def load(self, request: LoadRequest) -> Backend:
        import llama_cpp as ll

        # Models sharing a GPU plan one after another, each seeing what the last took.
        with llamacpp_gpu.loading(ll, request):
            return LlamaCppBackend(request)


def gpu_offload_supported() -> bool:
    import llama_cpp as ll

    return llamacpp_gpu.gpu_offload(ll)


def build_features() -> frozenset[str]:
    """The CPU features the installed llama.cpp was compiled with."""
    import llama_cpp as ll

    return cpu.build_features(ll.llama_print_system_info().decode("utf-8", "replace"))


def repack_choice(setting: bool | None) -> cpu.RepackChoice:
    """Whether this build may repack weights on this CPU (see backends.llamacpp.cpu)."""
    return cpu.choose(setting, build_features(), cpu.cpu_flags())


class LlamaCppBackend:
    """A loaded GGUF model and its batch of sequences (see the module docstring)."""

    def __init__(self, request: LoadRequest) -> None:
        from backends.llamacpp import native
        from backends.llamacpp.pooled import Pooler

        self._native = native
        import llama_cpp as ll

        self._ll = ll
        native.init_logging()
        options = prefix_options(request, "llama.cpp", "prefix_cache_slots", ("flash_attention",))
        pooled = request.task != GENERATE  # an embedding model keeps no prefixes
        self._prefix_cache = options.enabled and not pooled
        n_cache_slots = _cache_slots(request, options, ll.llama_max_parallel_sequences(), pooled)
        _check_gguf(request.path)
        ll.llama_backend_init()
        self._model = self._load_model(request)
        self._vocab = ll.llama_model_get_vocab(self._model)
        n_train = ll.llama_model_n_ctx_train(self._model)
        self._eog = native.eog_tokens(self._vocab)
        self._grammars = Grammars(self._vocab)
        self._n_ctx = request.context_length
        self._slots = [_Slot(i) for i in range(request.max_sequences + n_cache_slots)]
        self._n_swa = ll.llama_model_n_swa(self._model)
        self._recurrent = ll.llama_model_is_recurrent(self._model) or ll.llama_model_is_hybrid(
            self._model
        )
        self._ctx = self._new_context(request, len(self._slots))
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = native.Batch(self._batch_capacity(request))
        self._seqs: dict[int, _Seq] = {}
        self._store = _prompt_store(request, ll) if not (self._recurrent or pooled) else None
        self._pooler: Pooler | None = None
        self._draft_model: DraftModel | None = None
        self._ngram = (2, 4)
        drafters = self._drafters(request)
        try:
            self._template = self._chat_template(request)
        except TemplateError as exc:
            self.close()
            raise ModelLoadError(f"model {request.name!r}: {exc}") from exc
        reasoning, tools = formats.choose(
            self._template.source if self._template else None,
            native.meta_string(self._model, "general.architecture"),
            request.reasoning_parser,
            request.tool_parser,
        )
        # Where a format's markers are special tokens, the output shows them.
        self._special = formats.renders_special(reasoning, tools)
        try:
            self._pooler = (
                Pooler(ll, self._model, self._ctx, self._batch, request) if pooled else None
            )
        except ModelLoadError:
            self.close()
            raise
        # An embedding model's limit is per input, whose tokens all go in one pass.
        per_input = self._batch.capacity if pooled else self._n_ctx
        self.capabilities = Capabilities(
            context_length=min(self._n_ctx, n_train, per_input),
            max_sequences=request.max_sequences,
            vocab_size=ll.llama_vocab_n_tokens(self._vocab),
            chat_template=self._template is not None,
            fim=ll.llama_vocab_fim_pre(self._vocab) >= 0,
            gpu_offload=llamacpp_gpu.gpu_offload(ll),
            reasoning_format=reasoning,
            tool_format=tools,
            template_variables=self._template.variables if self._template else frozenset(),
            pooling=self._pooler.pooling if self._pooler else None,
            embedding_size=self._pooler.size if self._pooler else 0,
            drafters=drafters,
            details={
                "n_ctx_train": n_train,
                "threads": request.threads,
                "gpu_layers": self._placement.gpu_layers,
                "kv_cache_type": request.kv_cache_type,
                "weight_repack": self._repack.reason,
            },
        )

    def _drafters(self, request: LoadRequest) -> tuple[str, ...]:
        """Load the drafters models.toml asks for (prompt lookup unasked), where this
        model can drop rejected draft tokens: not a recurrent state, nor a sliding
        window that may have given older cells away."""
        spec = request.speculative
        if spec is None or request.task != GENERATE:
            return ()
        if self._recurrent or self._n_swa:
            why = "recurrent state" if self._recurrent else "sliding-window attention"
            if spec.drafters:
                self.close()
                raise ModelLoadError(
                    f"model {request.name!r}: speculative decoding needs a model whose KV "
                    f"cache can drop draft tokens, and this one has {why}; remove "
                    "[speculative] drafters"
                )
            log.info("model %s: no speculation (%s)", request.name, why)
            return ()
        drafters = spec.drafters if spec.drafters is not None else (NGRAM,)
        self._ngram = (spec.ngram_min, spec.ngram_max)
        if DRAFT_MODEL in drafters:
            from backends.llamacpp.draft import DraftModel

            if spec.draft_model is None:
                self.close()
                raise ModelLoadError(f"model {request.name!r}: the drafter \"model\" needs "
                                     "[speculative] draft_model")  # fmt: skip
            try:
                slots, flash = len(self._slots), self._flash_type
                self._draft_model = DraftModel(
                    self._ll, spec.draft_model, request, slots, self._vocab, flash
                )
            except ModelLoadError as exc:
                self.close()
                raise ModelLoadError(f"model {request.name!r}: {exc}") from exc
        return drafters

    def _load_model(self, request: LoadRequest) -> Any:
        ll = self._ll
        params = ll.llama_model_default_params()
        self._placement = llamacpp_gpu.apply_model(ll, params, request)
        self._repack = repack_choice(request.weight_repack)
        params.use_extra_bufts = self._repack.enabled
        model = ll.llama_model_load_from_file(str(request.path).encode(), params)
        if not model:
            raise ModelLoadError(
                f"llama.cpp could not load {request.path} (corrupt, unsupported, or out of memory)"
            )
        return model

    def _new_context(self, request: LoadRequest, n_seq: int) -> Any:
        ll = self._ll
        params = ll.llama_context_default_params()
        params.n_ctx = request.context_length
        params.n_batch = self._batch_capacity(request)
        params.n_ubatch = min(params.n_batch, 512)
        params.n_seq_max = n_seq
        params.kv_unified = True
        threads = request.threads or os.cpu_count() or 1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        if request.task != GENERATE:
            from backends.llamacpp.pooled import configure

            configure(params, request)
        try:
            llamacpp_gpu.apply_kv_cache(ll, params, request)
            self._flash_attention(params, request)
            self._flash_type = params.flash_attn_type  # the draft model's context too
        except ModelLoadError:
            ll.llama_model_free(self._model)
            raise
        ctx = ll.llama_init_from_model(self._model, params)
        if not ctx:
            ll.llama_model_free(self._model)
            raise ModelLoadError(llamacpp_gpu.context_failure(request, n_seq))
        return ctx

    def _flash_attention(self, params: Any, request: LoadRequest) -> None:
        """``options.flash_attention``: ``true``, ``false`` or ``"auto"``. Auto leaves it to
        llama.cpp on a GPU and turns it off for a generating model on the CPU, where
        llama.cpp's flash-attention kernel costs about as much per token of a pass as a
        whole one-token pass at a few thousand tokens of context (docs/benchmarks.md,
        "Flash attention on the CPU"): a batch of sequences, a verified draft or a long
        conversation decode two to four times faster without it. A quantized KV cache
        needs it."""
        ll = self._ll
        setting = request.options.get("flash_attention", "auto")
        if setting not in ("auto", True, False):
            raise ModelLoadError(
                f'model {request.name!r}: options.flash_attention must be "auto", true or false'
            )
        if setting is False and request.kv_cache_type != "f16":
            raise ModelLoadError(f"model {request.name!r}: kv_cache_type = "
                                 f"{request.kv_cache_type!r} needs flash attention")  # fmt: skip
        if setting is True:
            params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        elif setting is False or (
            request.kv_cache_type == "f16"
            and request.task == GENERATE
            and self._placement.gpu_layers == 0
        ):
            params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED

    @staticmethod
    def _batch_capacity(request: LoadRequest) -> int:
        return max(request.batch_tokens, request.max_sequences)

    def _chat_template(self, request: LoadRequest) -> ChatTemplate | None:
        source = request.chat_template or self._native.meta_string(
            self._model, "tokenizer.chat_template"
        )
        if not source:
            return None
        special = self._special_text
        bos = special(self._ll.llama_vocab_bos(self._vocab))
        eos = special(self._ll.llama_vocab_eos(self._vocab))
        return ChatTemplate(source, bos_token=bos, eos_token=eos)

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._native.piece(self._vocab, token, special=True).decode("utf-8", "replace")

    # -- tokenizer and template ------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._native.tokenize(self._vocab, text, add_special=add_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        data = b"".join(self._native.piece(self._vocab, t, special=True) for t in tokens)
        return data.decode("utf-8", "replace")

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] = (),
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        if self._template is None:
            raise TemplateError(
                "this model has no chat template; set chat_template in models.toml "
                "or use /v1/completions"
            )
        text = self._template.render(messages, tools, template_kwargs)
        bos = self._template.bos_token
        return self.tokenize(text, add_special=not (bos and text.startswith(bos)))

    def fim_prompt(
        self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()
    ) -> list[int]:
        ll, vocab = self._ll, self._vocab
        tokens = FimTokens(
            ll.llama_vocab_fim_pre(vocab),
            ll.llama_vocab_fim_suf(vocab),
            ll.llama_vocab_fim_mid(vocab),
            ll.llama_vocab_fim_rep(vocab),
            ll.llama_vocab_fim_sep(vocab),
        )
        if not tokens.supported:
            raise FimUnsupported(
                "this model has no fill-in-the-middle tokens; use a code model such as "
                "qwen2.5-coder for suffix and /infill"
            )
        bos = [ll.llama_vocab_bos(vocab)] if ll.llama_vocab_get_add_bos(vocab) else []

        def plain(text: str) -> list[int]:
            ids: list[int] = self._native.tokenize(
                vocab, text, add_special=False, parse_special=False
            )
            return ids

        return fim_prompt(tokens, plain, prefix, suffix, extra, bos=bos)

    def check_constraint(self, constraint: Constraint) -> None:
        self._grammars.compiled(constraint)

    # -- the batch -------------------------------------------------------------------

    def add(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        # The sampler first: if it cannot be made, no slot is left marked busy.
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        grammar = self._grammars.fresh(sampling.constraint) if sampling.constraint else None
        sampler = Sampler(sampling, self.capabilities.vocab_size, seed, self._eog, grammar)
        slot, keep = self._pick_slot(prompt)
        if sampling.seed is not None:
            # KV computed in another batch differs in the last bits, which can change a
            # sampled token: a seeded request never starts from another's KV.
            keep = self._truncate(slot, 0)
        else:
            keep = self._share(slot, prompt, self._truncate(slot, keep))
            keep = self._restore(slot, prompt, keep)
        slot.busy = True
        self._seqs[seq_id] = _Seq(slot, list(prompt[keep:]), sampler, Utf8Stream())
        self._trim_idle()
        return keep

    def _trim_idle(self) -> None:
        """Keep fewer cached prefixes the busier the batch is. Every step's attention
        spans the KV cells up to the highest one in use, cached prefixes' cells
        included, so idle prefixes slow every running sequence: beside ``n`` running
        sequences at most ``max(1, max_sequences - n)`` stay, the least recently used
        going first (a full batch keeps what llama-server's slots would)."""
        busy = sum(slot.busy for slot in self._slots)
        idle = sorted((s for s in self._slots if not s.busy and s.tokens),
                      key=lambda s: s.last_used)  # fmt: skip
        allowed = max(1, self.capabilities.max_sequences - busy)
        for slot in idle[: max(0, len(idle) - allowed)]:
            self._clear(slot)

    def _pick_slot(self, prompt: Sequence[int]) -> tuple[_Slot, int]:
        """The free slot that ``prompt`` continues (it shares all of the slot's tokens
        but a few: the next turn of a conversation), else the emptiest, least recently
        used one, so that what another slot holds past the shared part stays cached
        (``_share`` lends the shared part). Returns the slot and how many of its tokens
        the prompt shares; at least one prompt token is always left to feed."""
        free = [s for s in self._slots if not s.busy]
        shared = {slot.id: common_prefix(slot.tokens, prompt) for slot in free}
        best = max(free, key=lambda slot: shared[slot.id])
        n = shared[best.id]
        if n < MIN_REUSE or len(best.tokens) - n >= MIN_REUSE:
            best = min(free, key=lambda slot: (len(slot.tokens), slot.last_used))
        return best, min(shared[best.id], len(prompt) - 1)

    def _share(self, slot: _Slot, prompt: Sequence[int], keep: int) -> int:
        """Start ``slot`` from a longer prefix of ``prompt`` held by another slot, busy or
        not, where there is one: its cells gain ``slot``'s sequence id (the unified KV
        cache shares them; nothing is copied), so a new conversation with the same
        system prompt and tools as a cached or running one prefills only what differs,
        and the other keeps its own KV. Returns the tokens ``slot`` now starts from."""
        if self._recurrent:
            return keep  # a recurrent state cannot be shared part-way
        ll, mem = self._ll, self._mem
        donor, n = slot, keep
        for other in self._slots:
            m = common_prefix(other.tokens, prompt)
            if other is not slot and m > n:
                donor, n = other, m
        n = min(n, len(prompt) - 1)
        if donor is slot or n < keep + MIN_REUSE:
            return keep
        needed = max(0, n - self._n_swa) if self._n_swa else 0
        if not 0 <= ll.llama_memory_seq_pos_min(mem, donor.id) <= needed:
            return keep  # the donor's sliding window no longer holds what this needs
        self._clear(slot)
        ll.llama_memory_seq_cp(mem, donor.id, slot.id, 0, n)
        slot.tokens.extend(donor.tokens[:n])
        return n

    def _truncate(self, slot: _Slot, keep: int) -> int:
        """Cut ``slot``'s KV to its first ``keep`` tokens, or to none where the memory
        cannot hold exactly those: a recurrent or hybrid model's state cannot be cut
        part-way (``seq_rm`` says so), and a sliding-window cache may have given the
        cells of positions that left the window to another sequence (``seq_pos_min``
        says how far back it still holds). Returns the tokens kept."""
        ll, mem = self._ll, self._mem
        if keep > 0 and ll.llama_memory_seq_rm(mem, slot.id, keep, -1):
            needed = max(0, keep - self._n_swa) if self._n_swa else 0
            if 0 <= ll.llama_memory_seq_pos_min(mem, slot.id) <= needed:
                del slot.tokens[keep:]
                return keep
        self._clear(slot)
        return 0

    def step(self, work: Sequence[Work]) -> tuple[list[Delta], list[StepFailure]]:
        fed = self._fill_batch(work, self._drafts(work))
        rc = self._batch.decode(self._ctx)
        if rc == 1 and self._evict_idle():
            rc = self._batch.decode(self._ctx)
        if rc != 0:
            ids = tuple(w.seq_id for w in work)
            for seq_id in ids:
                self._drop(seq_id)
            return [], [StepFailure(ids, f"llama_decode failed (code {rc})")]
        now = time.monotonic()
        deltas = []
        for w, v in zip(work, fed, strict=True):
            seq = self._seqs[w.seq_id]
            seq.slot.tokens.extend(v.tokens)
            seq.slot.last_used = now
            del seq.pending[: len(v.tokens)]
            if v.draft:
                deltas += self._verify(w.seq_id, seq, v)
            elif w.sample:
                deltas.append(self._sample(w.seq_id, seq, v.index))
        return deltas, []

    def _drafts(self, work: Sequence[Work]) -> dict[int, tuple[str, list[int]]]:
        """Each speculating sequence's guess and its drafter: prompt lookup where the
        sequence's last tokens recur, else the draft model (one batched run for all)."""
        drafts: dict[int, tuple[str, list[int]]] = {}
        by_model: list[tuple[int, list[int], int]] = []
        for w in work:
            seq = self._seqs[w.seq_id]
            if w.draft <= 0 or not w.sample or w.n_tokens != len(seq.pending):
                continue
            history = seq.slot.tokens + seq.pending
            if NGRAM in self.capabilities.drafters:
                if seq.ngrams is None:
                    seq.ngrams = NgramIndex(*self._ngram)
                seq.ngrams.extend(history[len(seq.ngrams.tokens) :])
                guess = seq.ngrams.draft(w.draft)
                if guess:
                    drafts[w.seq_id] = (NGRAM, guess)
                    continue
            if self._draft_model is not None:
                by_model.append((w.seq_id, history, w.draft))
        if by_model:
            slots = {self._seqs[s].slot.id: s for s, _, _ in by_model}
            wanted = [(self._seqs[s].slot.id, h, k) for s, h, k in by_model]
            for slot_id, guess in self._draft_model.draft(wanted).items():  # type: ignore[union-attr]
                if guess:
                    drafts[slots[slot_id]] = (DRAFT_MODEL, guess)
        return drafts

    def _fill_batch(
        self, work: Sequence[Work], drafts: Mapping[int, tuple[str, list[int]]]
    ) -> list[_Verify]:
        batch = self._batch
        batch.clear()
        fed = []
        for w in work:
            seq = self._seqs[w.seq_id]
            tokens = seq.pending[: w.n_tokens]
            start = len(seq.slot.tokens)
            index = -1
            for i, token in enumerate(tokens):
                last = i == len(tokens) - 1
                index = batch.add(token, start + i, seq.slot.id, w.sample and last)
            verify = _Verify(index, tokens)
            if w.seq_id in drafts:
                verify.drafter, verify.draft = drafts[w.seq_id]
                start += len(tokens)
                for i, token in enumerate(verify.draft):
                    batch.add(token, start + i, seq.slot.id, True)
            fed.append(verify)
        return fed

    def _verify(self, seq_id: int, seq: _Seq, v: _Verify) -> list[Delta]:
        """Sample each position of a speculative step in turn with the sequence's own
        sampler, keeping a draft token only where the sample equals it; the first
        sample that differs (or ends the sequence) is the last. The refused draft
        tokens leave the KV cache."""
        slot, draft = seq.slot, v.draft
        slot.tokens.extend(draft)
        deltas, accepted = [], 0
        for i in range(len(draft) + 1):
            delta = self._sample(seq_id, seq, v.index + i)
            deltas.append(delta)
            if delta.eog or i == len(draft) or delta.token != draft[i]:
                break
            seq.pending.pop()  # its KV is in the cache already: it is not fed again
            accepted += 1
        keep = len(slot.tokens) - len(draft) + accepted
        if keep < len(slot.tokens):
            self._ll.llama_memory_seq_rm(self._mem, slot.id, keep, -1)
            del slot.tokens[keep:]
        deltas[-1] = dataclasses.replace(
            deltas[-1], drafted=len(draft), accepted=accepted, drafter=v.drafter
        )
        return deltas

    def _sample(self, seq_id: int, seq: _Seq, index: int) -> Delta:
        ll = self._ll
        token = seq.sampler.sample(self._ctx, index)
        if ll.llama_vocab_is_eog(self._vocab, token):
            return Delta(seq_id, token, seq.text.flush(), eog=True)
        seq.pending.append(token)
        piece = self._native.piece(self._vocab, token, special=self._special)
        return Delta(seq_id, token, seq.text.feed(piece), False)

    def force(self, seq_id: int, tokens: Sequence[int]) -> None:
        self._seqs[seq_id].pending.extend(tokens)

    def _evict_idle(self) -> bool:
        """Drop every cached prefix to make room in the KV cache."""
        idle = [slot for slot in self._slots if not slot.busy and slot.tokens]
        for slot in idle:
            self._clear(slot)
        return bool(idle)

    def _restore(self, slot: _Slot, prompt: Sequence[int], keep: int) -> int:
        """Start ``slot`` from saved state (RAM or disk) where that gives at least a
        block more of ``prompt`` than the live KV did."""
        if self._store is None:
            return keep
        hit = self._store.longest(prompt, more_than=keep + BLOCK)
        data = self._store.read(hit) if hit is not None else None
        if hit is None or data is None:
            return keep
        self._clear(slot)
        if not state.write(self._ll, self._ctx, slot.id, data):
            self._clear(slot)
            return 0
        slot.tokens.extend(hit.entry.tokens)
        return self._truncate(slot, hit.tokens)

    def _save(self, slot: _Slot) -> None:
        """Keep a finished sequence's state for later prompts (and later processes)."""
        if self._store is None or len(slot.tokens) < MIN_SAVE or self._store.covers(slot.tokens):
            return
        start = time.perf_counter()
        data = state.read(self._ll, self._ctx, slot.id)
        read = time.perf_counter()
        if data is not None:
            self._store.save(list(slot.tokens), data)
            took, copy = (time.perf_counter() - start) * 1000, (read - start) * 1000
            log.info("saved the state of %d tokens (%.1f MB) in %.0f ms (%.0f ms copying it)",
                     len(slot.tokens), len(data) / 1e6, took, copy)  # fmt: skip

    def prompt_cache_stats(self) -> dict[str, int]:
        return self._store.stats() if self._store is not None else {}

    def _drop(self, seq_id: int, *, save: bool = False) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return
        seq.sampler.free()
        if save:  # a sequence that ended well, not one whose step failed
            self._save(seq.slot)
        seq.slot.busy = False
        if not self._prefix_cache:
            self._clear(seq.slot)

    def _clear(self, slot: _Slot) -> None:
        self._ll.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
        slot.tokens.clear()

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        if self._pooler is None:
            raise TaskUnsupported('this model generates text; embeddings need task = "embed"')
        return self._pooler.embed(inputs)

    def rerank_prompt(self, query: str, document: str) -> list[int]:
        if self._pooler is None:
            raise TaskUnsupported('this model generates text; reranking needs task = "rerank"')
        return self._pooler.rerank_prompt(query, document)

    def release(self, seq_id: int) -> None:
        self._drop(seq_id, save=True)

    def kv_cache_used(self) -> int:
        # Cells shared by several slots count once per slot: an upper bound.
        return sum(len(slot.tokens) for slot in self._slots)

    def close(self) -> None:
        for seq_id in list(self._seqs):
            self._drop(seq_id)
        if self._draft_model is not None:
            self._draft_model.close()
        if self._ctx is not None:
            self._grammars.close()
            self._batch.free()
            self._ll.llama_free(self._ctx)
            self._ll.llama_model_free(self._model)
            self._ctx = None


def _prompt_store(request: LoadRequest, ll: Any) -> PromptStore | None:
    spec = request.prompt_cache
    if spec is None or not (spec.ram_bytes or spec.disk_bytes):
        return None
    key = model_key("llama.cpp", ll.__version__, spec.identity, request.kv_cache_type, BLOCK)
    return PromptStore(key, spec.directory, ram_bytes=spec.ram_bytes, disk_bytes=spec.disk_bytes)


def _cache_slots(
    request: LoadRequest, options: PrefixOptions, limit: int, pooled: bool = False
) -> int:
    """How many finished sequences to keep as prefixes: ``prefix_cache_slots``, within
    llama.cpp's limit on sequences in one context (``limit``) beside ``max_sequences``;
    none for an embedding model (``pooled``)."""
    room = limit - request.max_sequences
    if room < 0:
        raise ModelLoadError(
            f"model {request.name!r}: max_sequences = {request.max_sequences} is more than "
            f"llama.cpp's {limit} sequences per context"
        )
    if not options.enabled or pooled:
        return 0
    if "prefix_cache_slots" not in request.options:
        return min(options.entries, room)
    if options.entries > room:
        raise ModelLoadError(
            f"model {request.name!r}: max_sequences ({request.max_sequences}) plus "
            f"options.prefix_cache_slots ({options.entries}) is more than llama.cpp's {limit} "
            f"sequences per context; lower one of them"
        )
    return options.entries


def _check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot open model file {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic {magic!r})")
