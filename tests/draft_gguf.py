"""A draft model made from the default model: its first blocks only (an early exit), the
same tokenizer, embeddings and output head. No smaller model with Qwen2.5's tokenizer
ships in a package; an early exit of the model itself is a real, if weak, draft of the
same family (the LayerSkip idea, without its training), which is what the draft-model
path needs to be tested end to end: same tokenizer, a second context, its guesses
verified by the full model."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.gguf_files import copy_metadata


def build_early_exit(source: Path, path: Path, blocks: int) -> Path:
    """Write ``path``: ``source`` (a llama.cpp decoder GGUF) cut to its first ``blocks``."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(path, arch)
    copy_metadata(reader, writer, {f"{arch}.block_count": blocks})
    for t in reader.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= blocks:
            continue
        # Quantized data comes as bytes per row, which the writer takes as they are.
        writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
