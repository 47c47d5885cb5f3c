"""A BERT embedding model in Hugging Face's layout, written as an F16 GGUF with numpy alone.

Some packages ship a sentence-embedding model as a Hugging Face folder: ``config.json``,
``model.safetensors``, ``vocab.txt``, the tokenizer's JSON files and sentence-transformers'
``modules.json`` with its pooling folder. llama.cpp's converter (``convert_hf_to_gguf.py
--outtype f16``) turns such a folder into a GGUF, but it needs torch and transformers, which
``hearth pull`` should not. This writes the file that converter writes for an uncased
WordPiece BERT: the same metadata in the same order, the same tensors, names, order and
types, so the result is checked by the sha256 of the converter's own output.

Only what these models use is accepted: ``BertModel`` with absolute positions, an uncased
WordPiece vocabulary, F32 or F16 weights. Anything else is a :class:`ConvertError`.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

ALIGNMENT = 32
_F32, _F16 = 0, 1  # ggml tensor types
_MOSTLY_F16 = 1  # llama.cpp file type
_POOLING = {"pooling_mode_mean_tokens": 1, "pooling_mode_cls_token": 2, "pooling_mode_lasttoken": 3}
_NORMAL, _CONTROL = 1, 3  # token types
_DTYPES = {"F32": np.float32, "F16": np.float16}
_SKIPPED = re.compile(r"embeddings\.position_ids|pooler\..*|cls\..*")
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_LAYER = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_LAYER_NAME = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
# Kept in F32 by the converter whatever the output type, as llama.cpp's quantizer does.
_KEEP_F32 = ("position_embd.weight", "token_types.weight")
# GGUF value types
_U32, _I32, _F32V, _BOOL, _STR, _ARR = 4, 5, 6, 7, 8, 9


class ConvertError(Exception):
    """The folder is not a model this writer can convert; the message says why."""


def convert(folder: Path, out: IO[bytes]) -> None:
    """Write the GGUF of the BERT model in ``folder`` to ``out``."""
    config = _json(folder / "config.json")
    if config.get("architectures") != ["BertModel"]:
        raise ConvertError(f"{folder}: not a BertModel: {config.get('architectures')}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConvertError(f"{folder}: only absolute position embeddings are supported")
    tensors = list(_tensors(folder / "model.safetensors"))
    metadata = [*_general(config, tensors), *_hparams(config, folder), *_vocab(folder, config)]
    _write(out, metadata, tensors)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(f"cannot read {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise ConvertError(f"{path}: not a JSON object")
    return value


def _tensors(path: Path) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """(GGUF name, array in its GGUF type) in the file's order, as the converter goes."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    for name, info in header.items():
        if name == "__metadata__" or _SKIPPED.fullmatch(name.removeprefix("bert.")):
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConvertError(f"{path.name}: tensor {name} is {info['dtype']}, not F32 or F16")
        start, end = info["data_offsets"]
        array = data[start:end].view(dtype).reshape(info["shape"])
        target = _gguf_name(name)
        keep = array.ndim <= 1 or target.endswith("_norm.weight") or target in _KEEP_F32
        yield target, array.astype(np.float32 if keep else np.float16)


def _gguf_name(name: str) -> str:
    name = name.removeprefix("bert.")
    name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    match = _LAYER_NAME.fullmatch(name)
    if match is None or match.group(2) not in _LAYER:
        raise ConvertError(f"unexpected tensor {name!r} for a BERT model")
    block, module, kind = match.groups()
    return f"blk.{block}.{_LAYER[module]}.{kind}"


def _general(config: dict[str, Any], tensors: list[tuple[str, Any]]) -> list[tuple[str, int, Any]]:
    """general.*: named from ``_name_or_path`` ("org/Name-parts") as the converter names it."""
    meta: list[tuple[str, int, Any]] = [("general.architecture", _STR, "bert")]
    meta.append(("general.type", _STR, "model"))
    org, _, repo = str(config.get("_name_or_path", "")).rpartition("/")
    if repo:
        words = " ".join(w[:1].upper() + w[1:] for w in repo.split("-"))
        meta.append(("general.name", _STR, words))
    if org and "/" not in org:
        meta.append(("general.organization", _STR, org[:1].upper() + org[1:]))
    meta.append(("general.size_label", _STR, size_label(sum(a.size for _, a in tensors))))
    return meta


def size_label(params: int) -> str:
    """A parameter count as llama.cpp labels sizes: 22,565,376 → "23M", 1.5e9 → "1.5B"."""
    steps = ((1e12, 1e12, "T"), (1e9, 1e9, "B"), (1e6, 1e6, "M"), (-1, 1e3, "K"))
    scale, suffix = next((scale, suffix) for above, scale, suffix in steps if params > above)
    scaled = params / scale
    digits = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{digits}f}{suffix}"


def _hparams(config: dict[str, Any], folder: Path) -> list[tuple[str, int, Any]]:
    meta: list[tuple[str, int, Any]] = [
        ("bert.block_count", _U32, config["num_hidden_layers"]),
        ("bert.context_length", _U32, config["max_position_embeddings"]),
        ("bert.embedding_length", _U32, config["hidden_size"]),
        ("bert.feed_forward_length", _U32, config["intermediate_size"]),
        ("bert.attention.head_count", _U32, config["num_attention_heads"]),
        ("bert.attention.layer_norm_epsilon", _F32V, config.get("layer_norm_eps", 1e-12)),
        ("general.file_type", _U32, _MOSTLY_F16),
        ("bert.attention.causal", _BOOL, False),
    ]
    pooling = _pooling(folder)
    if pooling is not None:
        meta.append(("bert.pooling_type", _U32, pooling))
    meta.append(("general.quantization_version", _U32, 2))
    return meta


def _pooling(folder: Path) -> int | None:
    """llama.cpp's pooling type from sentence-transformers' Pooling module, if there is one."""
    if not (folder / "modules.json").is_file():
        return None
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    for module in modules:
        if module.get("type", "").endswith(".Pooling"):
            settings = _json(folder / module["path"] / "config.json")
            modes = [kind for key, kind in _POOLING.items() if settings.get(key)]
            if len(modes) != 1:
                raise ConvertError(f"{folder}: pooling {settings} has no single llama.cpp type")
            return modes[0]
    return None


def _vocab(folder: Path, config: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """The WordPiece vocabulary as llama.cpp's "bert" tokenizer reads it (phantom spaces)."""
    if not _json(folder / "tokenizer_config.json").get("do_lower_case", False):
        raise ConvertError(f"{folder}: only uncased WordPiece vocabularies are supported")
    tokens = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    tokens = tokens[:-1] if tokens[-1] == "" else tokens
    added = _json(folder / "tokenizer.json").get("added_tokens", [])
    control = {t["id"] for t in added if t.get("special")}
    types = [_CONTROL if i in control else _NORMAL for i in range(len(tokens))]
    pieces = [_phantom(t, kind) for t, kind in zip(tokens, types, strict=True)]
    ids = _special_ids(folder, tokens)
    return [
        ("tokenizer.ggml.token_type_count", _U32, config.get("type_vocab_size", 1)),
        ("tokenizer.ggml.model", _STR, "bert"),
        # The converter's name for this (uncased BERT WordPiece) pre-tokenizer.
        ("tokenizer.ggml.pre", _STR, "jina-v2-en"),
        ("tokenizer.ggml.tokens", _ARR, (_STR, pieces)),
        ("tokenizer.ggml.token_type", _ARR, (_I32, types)),
        ("tokenizer.ggml.bos_token_id", _U32, ids["cls_token"]),
        ("tokenizer.ggml.eos_token_id", _U32, ids["sep_token"]),
        ("tokenizer.ggml.unknown_token_id", _U32, ids["unk_token"]),
        ("tokenizer.ggml.seperator_token_id", _U32, ids["sep_token"]),
        ("tokenizer.ggml.padding_token_id", _U32, ids["pad_token"]),
        ("tokenizer.ggml.mask_token_id", _U32, ids["mask_token"]),
        ("tokenizer.ggml.add_bos_token", _BOOL, True),  # [CLS] text [SEP]
        ("tokenizer.ggml.add_eos_token", _BOOL, True),
        ("tokenizer.ggml.add_sep_token", _BOOL, False),
        ("tokenizer.ggml.normalizer.lowercase", _BOOL, True),
    ]


def _phantom(token: str, kind: int) -> str:
    if kind == _CONTROL:
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def _special_ids(folder: Path, tokens: list[str]) -> dict[str, int]:
    names = _json(folder / "special_tokens_map.json")
    index = {t: i for i, t in enumerate(tokens)}
    ids = {}
    for key in ("cls_token", "sep_token", "unk_token", "pad_token", "mask_token"):
        value = names.get(key)
        text = value.get("content") if isinstance(value, dict) else value
        if text not in index:
            raise ConvertError(f"{folder}: special token {key} = {text!r} is not in vocab.txt")
        ids[key] = index[text]
    return ids


def _write(
    out: IO[bytes], metadata: list[tuple[str, int, Any]], tensors: list[tuple[str, Any]]
) -> None:
    """GGUF v3: header, key/values, tensor infos, then each tensor's data, all aligned."""
    head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, kind, value in metadata:
        head += _string(key) + struct.pack("<I", kind) + _value(kind, value)
    offset = 0
    for name, array in tensors:
        kind = _F16 if array.dtype == np.float16 else _F32
        dims = tuple(reversed(array.shape))  # ggml lists the fastest-moving dimension first
        head += _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, offset)
        offset += _padded(array.nbytes)
    out.write(head + bytes(_padded(len(head)) - len(head)))
    for _, array in tensors:
        out.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
        out.write(bytes(_padded(array.nbytes) - array.nbytes))


def _padded(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(kind: int, value: Any) -> bytes:
    if kind == _STR:
        return _string(value)
    if kind == _ARR:
        item_kind, items = value
        body = b"".join(_value(item_kind, item) for item in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    return struct.pack({_U32: "<I", _I32: "<i", _F32V: "<f", _BOOL: "<?"}[kind], value)
