"""Embeddings and reranking with llama.cpp: a context made with ``embeddings`` on and a
pooling type, whose forward pass gives one pooled vector per sequence
(``llama_get_embeddings_seq``) instead of logits to sample.

Every input of a pass is its own sequence (ids from 0) in one ``llama_decode``; its tokens
all go in that pass, since a vector pools every token of its input at once. An encoder
(BERT) attends within a pass only and keeps no KV; a decoder pooled by ``mean`` or
``last`` fills the KV cache during the pass, so the cache is cleared after it. The
physical batch (``n_ubatch``) is the whole batch, as llama.cpp requires of a model whose
attention is not causal.

A reranker pools by ``rank``: its classification head gives a logit per label, turned
here into a probability (the sigmoid, as Jina, Cohere and Text Embeddings Inference
report relevance), except where llama.cpp's graph already gives probabilities (the
softmax over Qwen3 rerankers' yes/no). Its input for a (query, document) pair follows
llama-server: the model's rerank template (``tokenizer.chat_template.rerank``, with
``{query}`` and ``{document}``) where it has one, else BOS, the query, EOS, SEP, the
document, EOS, as the vocabulary adds them. A client's text never becomes special
tokens: only the template's own text is parsed for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from backends.base import RERANK, BackendError, LoadRequest, ModelLoadError, TaskUnsupported
from backends.llamacpp import native

# llama.cpp's enum llama_pooling_type
POOLING_CODES = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
POOLING_NAMES = {code: name for name, code in POOLING_CODES.items()}
UNSPECIFIED = -1
# Architectures whose rank head llama.cpp ends in a softmax: its outputs are probabilities.
SOFTMAX_RANK = frozenset({"qwen3", "qwen3vl"})


def configure(params: Any, request: LoadRequest) -> None:
    """Context parameters for an embedding or reranking model."""
    params.embeddings = True
    params.pooling_type = POOLING_CODES.get(request.pooling or "", UNSPECIFIED)
    params.n_ubatch = params.n_batch
    params.n_ctx = max(params.n_ctx, params.n_batch)  # a decoder's pass fills the KV cache


class Pooler:
    """A loaded embedding or reranking model's passes (see the module docstring)."""

    def __init__(
        self, ll: Any, model: Any, ctx: Any, batch: native.Batch, request: LoadRequest
    ) -> None:
        self._ll, self._ctx, self._batch = ll, ctx, batch
        self._vocab = ll.llama_model_get_vocab(model)
        self.rerank = request.task == RERANK
        arch = native.meta_string(model, "general.architecture") or ""
        declared = native.meta_string(model, f"{arch}.pooling_type")
        self.pooling = POOLING_NAMES.get(ll.llama_pooling_type(ctx), "none")
        _check_pooling(request, self.pooling, declared)
        n_out = ll.llama_model_n_cls_out if self.rerank else ll.llama_model_n_embd_out
        self.size = int(n_out(model))
        self._sigmoid = self.rerank and arch not in SOFTMAX_RANK
        self._normalize = request.normalize and not self.rerank
        template = ll.llama_model_chat_template(model, b"rerank") if self.rerank else None
        self._template = template.decode("utf-8", "replace") if template else None

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        ll, batch = self._ll, self._batch
        batch.clear()
        for seq, tokens in enumerate(inputs):
            for pos, token in enumerate(tokens):
                batch.add(token, pos, seq, True)
        memory = ll.llama_get_memory(self._ctx)
        try:
            rc = batch.decode(self._ctx)
            if rc != 0:
                raise BackendError(f"llama_decode failed on an embedding batch (code {rc})")
            return [self._read(seq) for seq in range(len(inputs))]
        finally:
            if memory:
                ll.llama_memory_clear(memory, True)

    def _read(self, seq: int) -> list[float]:
        ptr = self._ll.llama_get_embeddings_seq(self._ctx, seq)
        if not ptr:
            raise BackendError(f"llama.cpp gave no pooled embedding for sequence {seq}")
        values: list[float] = ptr[: self.size]
        if self._sigmoid:
            return [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, v)))) for v in values]
        if self._normalize:
            norm = math.sqrt(sum(v * v for v in values))
            return [v / norm for v in values] if norm > 0 else values
        return values

    def rerank_prompt(self, query: str, document: str) -> list[int]:
        if not self.rerank:
            raise TaskUnsupported('this model is not a reranker (models.toml task = "rerank")')
        if self._template is not None:
            return self._from_template(query, document)
        ll, vocab = self._ll, self._vocab
        eos = ll.llama_vocab_eos(vocab)
        if eos < 0:
            eos = ll.llama_vocab_sep(vocab)
        close = [eos] if ll.llama_vocab_get_add_eos(vocab) else []
        out = [ll.llama_vocab_bos(vocab)] if ll.llama_vocab_get_add_bos(vocab) else []
        out += self._plain(query) + close
        if ll.llama_vocab_get_add_sep(vocab):
            out.append(ll.llama_vocab_sep(vocab))
        return out + self._plain(document) + close

    def _from_template(self, query: str, document: str) -> list[int]:
        """The template's own text parsed for special tokens; the query and the document
        in their places as plain text."""
        assert self._template is not None
        out: list[int] = []
        for i, part in enumerate(self._template.split("{query}")):
            if i:
                out += self._plain(query)
            for j, piece in enumerate(part.split("{document}")):
                if j:
                    out += self._plain(document)
                out += native.tokenize(self._vocab, piece, add_special=False)
        return out

    def _plain(self, text: str) -> list[int]:
        return native.tokenize(self._vocab, text, add_special=False, parse_special=False)


def _check_pooling(request: LoadRequest, pooling: str, declared: str | None) -> None:
    """``declared``: the GGUF's own ``<arch>.pooling_type`` (a number), if any."""
    if request.task == RERANK and declared != str(POOLING_CODES["rank"]):
        raise ModelLoadError(
            f"model {request.name!r} is not a reranker: its GGUF declares no rank pooling "
            '(a classification head), which task = "rerank" needs'
        )
    if request.task != RERANK and pooling in ("none", "rank"):
        raise ModelLoadError(
            f"model {request.name!r}: its GGUF names no pooling for embeddings ({pooling!r}); "
            'set pooling = "mean", "cls" or "last" in models.toml'
        )
