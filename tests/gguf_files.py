"""GGUF headers for tests, written without their weights.

``llama_header`` writes what /work/shared/tools/make_random_gguf.py writes for a
preset (same shapes and metadata, no tokenizer) but stops after the tensor-info
table, so a 70B "model" is a few kilobytes: the planner reads nothing further.
``raw_header`` builds hostile headers byte by byte.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

# name: (n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab), as make_random_gguf.py
PRESETS = {
    "7b": (4096, 32, 32, 32, 11008, 32000),
    "70b": (8192, 80, 64, 8, 28672, 32000),
}


def llama_header(path: Path, preset: str, quant: str = "q4_0") -> Path:
    n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab = PRESETS[preset]
    qtype = {"q4_0": GGMLQuantizationType.Q4_0, "q8_0": GGMLQuantizationType.Q8_0}[quant]
    block, size = GGML_QUANT_SIZES[qtype]
    n_embd_kv = n_embd // n_head * n_head_kv
    w = GGUFWriter(path, "llama")
    w.add_name(f"random-llama-{preset}-{quant}")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)

    def mat(name: str, rows: int, cols: int) -> None:
        row_bytes = cols // block * size
        w.add_tensor_info(name, (rows, row_bytes), np.dtype(np.uint8), rows * row_bytes, qtype)

    def norm(name: str) -> None:
        w.add_tensor_info(name, (n_embd,), np.dtype(np.float32), n_embd * 4)

    mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight")
        mat(p + "attn_q.weight", n_embd, n_embd)
        mat(p + "attn_k.weight", n_embd_kv, n_embd)
        mat(p + "attn_v.weight", n_embd_kv, n_embd)
        mat(p + "attn_output.weight", n_embd, n_embd)
        norm(p + "ffn_norm.weight")
        mat(p + "ffn_gate.weight", n_ff, n_embd)
        mat(p + "ffn_up.weight", n_ff, n_embd)
        mat(p + "ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight")
    mat("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def gguf_string(text: bytes, length: int | None = None) -> bytes:
    """A GGUF string; ``length`` may lie about the bytes that follow."""
    return struct.pack("<Q", len(text) if length is None else length) + text


def raw_header(n_tensors: int, kv: bytes = b"", n_kv: int = 0, tail: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv + tail


def copy_metadata(reader: Any, writer: GGUFWriter, changes: dict[str, Any]) -> None:
    """Every key of a GGUF ``reader`` into ``writer`` (but the architecture, which the
    writer has, and the GGUF.* ones it writes itself), with ``changes`` by key."""
    import gguf

    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = changes.get(field.name, field.contents())
        writer.add_key_value(field.name, value, kind, sub_type=sub)
