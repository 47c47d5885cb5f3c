"""The MLX backend (Apple Silicon; on Linux through ``mlx[cpu]``), over mlx-lm's models.

Each sequence prefills in its own mlx-lm KV cache (the step's prompt chunks in one
right-padded pass over their merged caches); for its first sample it joins the decode
batch (``backends.mlx.batch``), where one forward pass advances every decoding
sequence. Sampling is hearth's own (``backends.mlx.sampling``), so each sequence keeps its
own settings and seed. A finished sequence's KV is kept as a
prefix for the next request that starts with the same tokens, until memory is needed.

Failures are values: a forward pass that raises fails the step's sequences, a sample
that raises fails its own sequence, each as a ``StepFailure``; ``step`` itself never
raises for them, so no request can make the engine give up.

Memory: the KV budget is what fits under the memory limit (the wired-memory limit on a
Mac) after the weights: what one sequence alone may hold, and the sum the scheduler
admits against. The decode batch holds more than the sum of lengths, every row padded to
the longest (``backends.mlx.batch``), so the backend counts what its caches really hold
and checks the padded batch, every active sequence a row, before it adds a sequence
(refused with a retryable error when it would not fit) and before each step (where the
batch would outgrow the limit, the newest sequences fail until it fits).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends import formats
from backends.base import (
    GENERATE,
    Backend,
    Capabilities,
    ChatMessage,
    Constraint,
    Delta,
    FimUnsupported,
    GrammarError,
    LoadRequest,
    ModelLoadError,
    OutOfMemory,
    SamplingParams,
    StepFailure,
    TaskUnsupported,
    TemplateError,
    Tool,
    Work,
)
from backends.fim import fim_prompt
from backends.mlx import load as mlx_load
from backends.mlx.batch import DecodeBatch, padded_width
from backends.mlx.prefixes import PrefixCache
from backends.mlx.sampling import TokenSampler
from backends.text import IncrementalText

NO_MEMORY = (
    "the model's memory limit is reached (the MLX decode batch pads every sequence to the "
    "longest); retry when running requests finish"
)
NO_POOLING = (
    'the MLX backend generates text only: task = "embed" and "rerank" need pooled hidden '
    "states, which mlx-lm's models do not give; serve the model as a GGUF on llama.cpp"
)
NO_GRAMMAR = (
    "the MLX backend has no grammar-constrained sampling, so response_format json_object/"
    "json_schema and tool_choice 'required' or a named function are not available for this "
    "model; use tool_choice 'auto', or a GGUF model on the llama.cpp backend"
)
# The batch's KV cache is one padded array per layer for every sequence, trimmed for all
# of them at once: one sequence cannot drop its refused draft tokens alone.
NO_SPECULATION = (
    "speculative decoding is not available with the MLX backend (its batched KV cache "
    "cannot drop one sequence's refused draft tokens); remove [speculative] drafters"
)


class MlxPlugin:
    name = "mlx"

    def unavailable_reason(self) -> str | None:
        try:
            import mlx.core  # noqa: F401
            import mlx_lm  # noqa: F401
        except ImportError as exc:
            return (
                f"MLX is not installed ({exc}); pip install 'hearth[mlx]' "
                "(on Linux that installs mlx[cpu], which runs but slowly)"
            )
        return None

    def accepts(self, path: Path) -> bool:
        return path.is_dir() and (path / "config.json").exists()

    def load(self, request: LoadRequest) -> Backend:
        if request.task != GENERATE:
            raise ModelLoadError(f"model {request.name!r}: {NO_POOLING}")
        if request.speculative is not None and request.speculative.drafters:
            raise ModelLoadError(f"model {request.name!r}: {NO_SPECULATION}")
        return MlxBackend(request)


@dataclass(slots=True)
class _Seq:
    tokens: list[int]  # tokens whose KV is computed
    pending: list[int]  # tokens to feed
    cache: list[Any] | None  # its own cache while prefilling; None once in the batch
    sampler: TokenSampler
    text: IncrementalText
    reusable: bool


class MlxBackend:
    """A loaded MLX model and its batch of sequences (see the module docstring)."""

    def __init__(self, request: LoadRequest) -> None:
        import mlx.core as mx

        self._mx = mx
        self._loaded = mlx_load.load(request)
        m = self._loaded
        self._model, self._tok = m.model, m.tokenizer
        self._batch = DecodeBatch()
        self._seqs: dict[int, _Seq] = {}
        self._prefixes = PrefixCache(m.options.entries if m.options.enabled else 0)
        template = m.template.source if m.template else None
        reasoning, tools = formats.choose(
            template, m.architecture, request.reasoning_parser, request.tool_parser
        )
        m.special_output = formats.renders_special(reasoning, tools)
        self.capabilities = Capabilities(
            context_length=m.kv_capacity,
            max_sequences=request.max_sequences,
            vocab_size=m.vocab_size,
            chat_template=m.template is not None,
            fim=m.fim.supported,
            details=m.details,
            reasoning_format=reasoning,
            tool_format=tools,
            template_variables=m.template.variables if m.template else frozenset(),
        )

    # -- tokenizer and template ------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._tok.decode(list(tokens), skip_special_tokens=False))

    def _plain(self, text: str) -> list[int]:
        """Tokens of ``text`` with special-token names read as plain text."""
        return list(self._tok.encode(text, add_special_tokens=False, split_special_tokens=True))

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] = (),
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        template = self._loaded.template
        if template is None:
            raise TemplateError(
                "this model has no chat template; set chat_template in models.toml "
                "or use /v1/completions"
            )
        text = template.render(messages, tools, template_kwargs)
        bos = template.bos_token
        return self.tokenize(text, add_special=not (bos and text.startswith(bos)))

    def fim_prompt(
        self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()
    ) -> list[int]:
        if not self._loaded.fim.supported:
            raise FimUnsupported(
                "this model has no fill-in-the-middle tokens; use a code model such as "
                "qwen2.5-coder for suffix and /infill"
            )
        return fim_prompt(self._loaded.fim, self._plain, prefix, suffix, extra)

    def check_constraint(self, constraint: Constraint) -> None:
        raise GrammarError(NO_GRAMMAR)

    # -- the batch -------------------------------------------------------------------

    def add(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        if sampling.constraint is not None:
            raise GrammarError(NO_GRAMMAR)
        # A seeded request never reuses KV from another batch: it must reproduce.
        reusable = self._prefixes.entries > 0 and sampling.seed is None
        prefix, keep = (None, 0)
        if reusable and self._loaded.trimmable:
            prefix, keep = self._prefixes.best(prompt)
        self._evict_until_fits([len(prompt)])
        if not self._fits([len(prompt)]):
            raise OutOfMemory(NO_MEMORY)
        if prefix is not None and keep > 0:
            cache = [mlx_load.head(layer, keep) for layer in prefix.cache]
        else:
            keep, cache = 0, self._loaded.new_cache()
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        self._seqs[seq_id] = _Seq(
            tokens=list(prompt[:keep]),
            pending=list(prompt[keep:]),
            cache=cache,
            sampler=TokenSampler(sampling, self._loaded.eog, seed),
            text=IncrementalText(self._loaded.decode_output),
            reusable=reusable and self._loaded.trimmable,
        )
        return keep

    def _fits(self, new: Sequence[int] = ()) -> bool:
        """Whether the decode batch fits under the memory limit once every active
        sequence, and new ones of ``new`` tokens, is a row of it; cached prefixes count
        as they are."""
        lengths = [len(s.tokens) + len(s.pending) for s in self._seqs.values()] + list(new)
        cells = len(lengths) * padded_width(self._batch.width(), lengths)
        prefixes = sum(_nbytes(p.cache) for p in self._prefixes)
        elsewhere = self._mx.get_active_memory() - self._kv_bytes()
        return elsewhere + prefixes + cells * self._loaded.kv_bytes_per_token <= (
            self._loaded.memory_limit
        )

    def _evict_until_fits(self, new: Sequence[int] = ()) -> None:
        """Drop cached prefixes, least recently used first, until the batch fits."""
        while self._prefixes and not self._fits(new):
            self._prefixes.evict_oldest()
            self._mx.clear_cache()

    def _make_room(self) -> list[StepFailure]:
        """Before a step: evict prefixes, then fail the newest sequences, until the
        batch this step grows to fits (the scheduler admits oldest first)."""
        if self._fits():
            return []
        self._evict_until_fits()
        failures = []
        while self._seqs and not self._fits():
            seq_id = next(reversed(self._seqs))
            self._drop(seq_id, keep_prefix=False)
            self._mx.clear_cache()
            failures.append(StepFailure((seq_id,), NO_MEMORY))
        return failures

    def step(self, work: Sequence[Work]) -> tuple[list[Delta], list[StepFailure]]:
        failures = self._make_room()
        work = [w for w in work if w.seq_id in self._seqs]
        try:
            logits = self._forward(work)
        except Exception as exc:  # MLX raises plain RuntimeError/ValueError
            ids = tuple(w.seq_id for w in work)
            for seq_id in ids:
                self._drop(seq_id, keep_prefix=False)
            return [], [*failures, StepFailure(ids, f"MLX forward pass failed: {exc}")]
        deltas = []
        for w in work:
            seq = self._seqs[w.seq_id]
            seq.tokens.extend(seq.pending[: w.n_tokens])
            del seq.pending[: w.n_tokens]
            if not w.sample:
                continue
            try:
                deltas.append(self._sample(w.seq_id, seq, logits[w.seq_id]))
            except Exception as exc:  # one sequence's bad sample fails that sequence only
                self._drop(w.seq_id, keep_prefix=False)
                failures.append(StepFailure((w.seq_id,), f"sampling failed: {exc}"))
        return deltas, failures

    def _forward(self, work: Sequence[Work]) -> dict[int, Any]:
        """Run the step's forward passes; the last-position logits of each sampling
        sequence, as NumPy rows.

        Prompt chunks go first, all in one padded pass, each without its last token
        when it samples: MLX is lazy, so logits nobody reads are never computed. A
        sampling sequence then joins the decode batch, and one pass feeds every row
        its next token: the last prompt token, or the token sampled last step. A
        decoding sequence with forced tokens leaves the batch for the step, and they
        are fed as a prompt chunk is."""
        mx = self._mx
        working = {w.seq_id for w in work if w.n_tokens == 1}
        idle = [s for s in self._batch.rows if s not in working]
        for seq_id, cache in self._batch.leave(idle, extract=True).items():
            self._seqs[seq_id].cache = cache  # rejoins at its next sample
        prefill = [w for w in work if self._seqs[w.seq_id].cache is not None]
        body = {
            w.seq_id: self._seqs[w.seq_id].pending[: w.n_tokens - int(w.sample)] for w in prefill
        }
        states = self._prefill(body)
        for w in prefill:
            seq = self._seqs[w.seq_id]
            if w.sample and seq.cache is not None:
                self._batch.join(w.seq_id, seq.cache)
                seq.cache = None
        feed = {w.seq_id: self._seqs[w.seq_id].pending[w.n_tokens - 1] for w in work}
        rows: dict[int, Any] = {}
        if self._batch.rows:
            order = list(self._batch.rows)
            out = self._batch.forward(self._model, [feed[s] for s in order])
            rows = {s: out[i] for i, s in enumerate(order)}
        sampled = [w.seq_id for w in work if w.sample]
        stacked = mx.stack([rows[s] for s in sampled]).astype(mx.float32) if sampled else None
        mx.eval(states + self._batch.state(), stacked)
        array = np.array(stacked) if stacked is not None else np.zeros((0, 0))
        return {s: array[i] for i, s in enumerate(sampled)}

    def _prefill(self, body: dict[int, list[int]]) -> list[Any]:
        """Feed prompt tokens into each sequence's own cache: one right-padded pass
        over a merged cache when several have tokens and the caches allow it."""
        mx = self._mx
        items = [(s, tokens) for s, tokens in body.items() if tokens]
        if len(items) > 1 and self._loaded.trimmable:
            caches = [self._seqs[s].cache for s, _ in items]
            merged = [type(layers[0]).merge(list(layers)) for layers in zip(*caches, strict=True)]
            longest = max(len(tokens) for _, tokens in items)
            padding = [longest - len(tokens) for _, tokens in items]
            for layer in merged:
                layer.prepare(right_padding=padding)
            padded = [tokens + [0] * pad for (_, tokens), pad in zip(items, padding, strict=True)]
            self._model(mx.array(padded), cache=merged)
            for layer in merged:
                layer.finalize()
            for i, (s, _) in enumerate(items):
                self._seqs[s].cache = [layer.extract(i) for layer in merged]
        else:
            for s, tokens in items:
                self._model(mx.array([tokens]), cache=self._seqs[s].cache)
        return [layer.state for s, _ in items for layer in self._seqs[s].cache or []]

    def _sample(self, seq_id: int, seq: _Seq, logits: Any) -> Delta:
        token = seq.sampler.sample(logits)
        if token in self._loaded.eog:
            return Delta(seq_id, token, seq.text.flush(), eog=True)
        seq.pending.append(token)
        return Delta(seq_id, token, seq.text.feed(token), eog=False)

    def force(self, seq_id: int, tokens: Sequence[int]) -> None:
        self._seqs[seq_id].pending.extend(tokens)

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        raise TaskUnsupported(NO_POOLING)

    def rerank_prompt(self, query: str, document: str) -> list[int]:
        raise TaskUnsupported(NO_POOLING)

    def release(self, seq_id: int) -> None:
        self._drop(seq_id, keep_prefix=True)

    def _drop(self, seq_id: int, *, keep_prefix: bool) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return
        keep = keep_prefix and seq.reusable and len(seq.tokens) > 0
        cache = self._batch.leave([seq_id], extract=keep).get(seq_id, seq.cache)
        if keep and cache is not None:
            self._prefixes.remember(seq.tokens, cache)

    def kv_cache_used(self) -> int:
        """KV positions allocated (bytes over bytes per token): the decode batch at its
        padded width, the caches of sequences outside it, the cached prefixes."""
        return self._kv_bytes() // self._loaded.kv_bytes_per_token

    def _kv_bytes(self) -> int:
        own = [s.cache for s in self._seqs.values() if s.cache is not None]
        caches = [*own, *(p.cache for p in self._prefixes)]
        return self._batch.nbytes() + sum(_nbytes(cache) for cache in caches)

    def close(self) -> None:
        for seq_id in list(self._seqs):
            self._drop(seq_id, keep_prefix=False)
        self._prefixes.clear()
        self._mx.clear_cache()


def _nbytes(cache: list[Any]) -> int:
    return sum(int(layer.nbytes) for layer in cache)
