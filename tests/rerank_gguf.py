"""A reranker-shaped GGUF made from a BERT embedding GGUF: the same weights and
tokenizer, ``pooling_type`` rank, and a classification head of random weights (a dense
layer, tanh, one logit), as llama.cpp loads bge-reranker's and jina-reranker's. Its
scores mean nothing, but what llama.cpp computes is known: the logit of the head over
the [CLS] hidden state, which the same file without the head gives as a ``cls``-pooled
embedding. So the rerank path (pair prompt, rank pooling, batching, the probability)
is checked on the real backend where no real reranker can be had."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from tests.gguf_files import copy_metadata

RANK = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK


@dataclass(frozen=True, slots=True)
class Head:
    dense: np.ndarray  # (n_embd, n_embd): rows are outputs
    dense_bias: np.ndarray
    out: np.ndarray  # (n_embd,)
    out_bias: float

    def logit(self, cls_hidden: np.ndarray) -> float:
        return float(self.out @ np.tanh(self.dense @ cls_hidden + self.dense_bias) + self.out_bias)


def build_reranker(source: Path, path: Path, seed: int = 0, template: str | None = None) -> Head:
    """Write ``path`` from the BERT GGUF ``source`` (with ``template`` as its rerank
    template, ``tokenizer.chat_template.rerank``, where given); return its head."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    n_embd = int(reader.fields[f"{arch}.embedding_length"].contents())
    rng = np.random.default_rng(seed)
    head = Head(
        rng.normal(0, n_embd**-0.5, (n_embd, n_embd)).astype(np.float32),
        rng.normal(0, 0.1, n_embd).astype(np.float32),
        rng.normal(0, n_embd**-0.5, n_embd).astype(np.float32),
        0.1,
    )
    writer = gguf.GGUFWriter(path, arch)
    copy_metadata(reader, writer, {f"{arch}.pooling_type": RANK})
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_shape=list(reversed(t.shape.tolist())),
                          raw_dtype=t.tensor_type)  # fmt: skip
    if template is not None:
        writer.add_chat_template([{"name": "rerank", "template": template}])
    writer.add_tensor("cls.weight", head.dense)
    writer.add_tensor("cls.bias", head.dense_bias)
    writer.add_tensor("cls.output.weight", head.out[None, :])
    writer.add_tensor("cls.output.bias", np.array([head.out_bias], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return head
