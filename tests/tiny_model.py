"""A tiny random Qwen2 model with one set of weights in three formats.

``build_tiny_model(out, tokenizer_gguf)`` writes, in a few seconds and always
byte for byte the same:

- ``out/hf``: a Hugging Face folder (config.json, model.safetensors, the
  tokenizer with its chat template and special tokens);
- ``out/tiny-qwen2-f32.gguf``: the same weights as an F32 GGUF, arch qwen2,
  for llama.cpp;
- ``out/mlx``: the Hugging Face folder converted by ``mlx_lm.convert`` at
  float32, unquantized.

``build_tiny_gguf(path, tokenizer_gguf)`` writes the GGUF alone, the same bytes,
with numpy and gguf only: the llama.cpp tests need neither MLX nor the Hugging
Face libraries that come with it (safetensors, tokenizers, transformers).

The weights are random (fixed seed) and the tokenizer is the default model's,
read from the header of its GGUF (``tokenizer_gguf``), so prompts, chat
templates and special tokens behave as with the real model while the forward
pass costs next to nothing. The scales keep the logits well spread (greedy
decoding sits on no near-ties) and the special tokens' embeddings small, so
greedy decoding rarely picks one of them, ``<|im_end|>`` included.

Run ``python -m tests.tiny_model OUTDIR [TOKENIZER_GGUF]`` to build it by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from server.cli.pull import default_cache_dir

DEFAULT_TOKENIZER_GGUF = default_cache_dir() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_VOCAB = 151936
N_CTX = 4096
RMS_EPS = 1e-6
ROPE_THETA = 1_000_000.0
SEED = 20261126
FIRST_SPECIAL = 151643  # <|endoftext|>; every id from here on is an added token
BOS_ID = 151643
EOS_ID = 151645  # <|im_end|>

# The Qwen2 pre-tokenizer split, as in the model's own tokenizer.json.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# Attention adds a small share to the residual stream, so the next token depends
# on the context but llama.cpp's f16 KV cache moves the logits by only ~1e-4 of
# their spread; the MLP, a function of the current token alone, breaks the
# symmetry of tied embeddings that would otherwise make greedy decoding loop.
O_PROJ_STD = 0.02


@dataclass(frozen=True, slots=True)
class TinyModel:
    hf_dir: Path
    gguf_path: Path
    mlx_dir: Path


GGUF_NAME = "tiny-qwen2-f32.gguf"


def build_tiny_model(out: Path, tokenizer_gguf: Path = DEFAULT_TOKENIZER_GGUF) -> TinyModel:
    """Build the three formats under ``out``, replacing any earlier build there."""
    model = TinyModel(out / "hf", out / GGUF_NAME, out / "mlx")
    for folder in (model.hf_dir, model.mlx_dir):
        shutil.rmtree(folder, ignore_errors=True)
    model.gguf_path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_tokenizer_metadata(tokenizer_gguf)
    weights = make_weights()
    write_hf(model.hf_dir, weights, meta)
    write_gguf(model.gguf_path, weights, meta)
    convert_mlx(model.hf_dir, model.mlx_dir)
    return model


def build_tiny_gguf(path: Path, tokenizer_gguf: Path = DEFAULT_TOKENIZER_GGUF) -> Path:
    """Write the GGUF alone (numpy and gguf only), replacing any file at ``path``."""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(path, make_weights(), read_tokenizer_metadata(tokenizer_gguf))
    return path


# -- weights ------------------------------------------------------------------


def make_weights(seed: int = SEED) -> dict[str, np.ndarray]:
    """Hugging Face names and [out, in] layout, float32."""
    rng = np.random.default_rng(seed)

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm(std: float) -> np.ndarray:
        return (1.0 + rng.standard_normal(N_EMBD) * std).astype(np.float32)

    embed = normal(0.5, N_VOCAB, N_EMBD)
    embed[FIRST_SPECIAL:] *= 0.5  # added tokens: valid inputs, unlikely outputs
    head_dim = N_EMBD // N_HEAD
    n_kv = head_dim * N_HEAD_KV
    w = {"model.embed_tokens.weight": embed}
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(0.2)
        w[p + "self_attn.q_proj.weight"] = normal(0.15, N_EMBD, N_EMBD)
        w[p + "self_attn.q_proj.bias"] = normal(0.2, N_EMBD)
        w[p + "self_attn.k_proj.weight"] = normal(0.15, n_kv, N_EMBD)
        w[p + "self_attn.k_proj.bias"] = normal(0.2, n_kv)
        w[p + "self_attn.v_proj.weight"] = normal(0.125, n_kv, N_EMBD)
        w[p + "self_attn.v_proj.bias"] = normal(0.1, n_kv)
        w[p + "self_attn.o_proj.weight"] = normal(O_PROJ_STD, N_EMBD, N_EMBD)
        w[p + "post_attention_layernorm.weight"] = norm(0.2)
        w[p + "mlp.gate_proj.weight"] = normal(0.125, N_FF, N_EMBD)
        w[p + "mlp.up_proj.weight"] = normal(0.125, N_FF, N_EMBD)
        w[p + "mlp.down_proj.weight"] = normal(0.18, N_EMBD, N_FF)
    # Signs mixed: with tied embeddings an all-positive final norm makes the
    # input token's own row the best match, and greedy decoding repeats it.
    w["model.norm.weight"] = normal(1.0, N_EMBD)
    return w


def gguf_name(hf_name: str) -> str:
    """llama.cpp's qwen2 tensor name for a Hugging Face one."""
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    block = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }[module]
    return f"blk.{layer}.{block}.{kind}"


# -- tokenizer metadata from a GGUF header -------------------------------------

# GGUF value type -> struct format (0..7, then 10..12); 8 is a string, 9 an array
_SCALARS = dict(zip([0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12], "BbHhIif?Qqd", strict=True))
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True, slots=True)
class Value:
    """One GGUF key's value with its GGUF type (and element type for arrays)."""

    value: Any
    type: int
    sub_type: int | None = None


def read_tokenizer_metadata(path: Path) -> dict[str, Value]:
    """Every ``tokenizer.*`` key of a GGUF, reading the header only.

    gguf.GGUFReader takes ~10 s on the default model (a numpy view per
    string); this plain reader takes well under one.
    """
    with path.open("rb") as f:
        magic, _version, _n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        found = {}
        for _ in range(n_kv):
            key = _read_string(f)
            (vtype,) = struct.unpack("<I", f.read(4))
            value = _read_value(f, vtype)
            if key.startswith("tokenizer."):
                found[key] = value
    return found


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8")


def _read_value(f: BinaryIO, vtype: int) -> Value:
    if vtype == _STRING:
        return Value(_read_string(f), vtype)
    if vtype in _SCALARS:
        fmt = "<" + _SCALARS[vtype]
        return Value(struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0], vtype)
    if vtype != _ARRAY:
        raise ValueError(f"unknown GGUF value type {vtype}")
    sub, n = struct.unpack("<IQ", f.read(12))
    if sub == _STRING:
        return Value([_read_string(f) for _ in range(n)], vtype, sub)
    fmt = "<" + _SCALARS[sub]
    items = np.frombuffer(f.read(n * struct.calcsize(fmt)), dtype=np.dtype(fmt))
    return Value(items.tolist(), vtype, sub)


# -- Hugging Face folder --------------------------------------------------------


def write_hf(folder: Path, weights: dict[str, np.ndarray], meta: dict[str, Value]) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(), indent=2) + "\n")
    write_hf_tokenizer(folder, meta)


def hf_config() -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": N_EMBD,
        "intermediate_size": N_FF,
        "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_HEAD_KV,
        "vocab_size": N_VOCAB,
        "hidden_act": "silu",
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "max_position_embeddings": N_CTX,
        "max_window_layers": N_LAYER,
        "use_sliding_window": False,
        "sliding_window": N_CTX,
        "tie_word_embeddings": True,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def write_hf_tokenizer(folder: Path, meta: dict[str, Value]) -> None:
    """tokenizer.json (built with ``tokenizers``) and tokenizer_config.json.

    transformers can read a GGUF tokenizer itself, but only with torch.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tokens: list[str] = meta["tokenizer.ggml.tokens"].value
    types: list[int] = meta["tokenizer.ggml.token_type"].value
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"].value]
    vocab = {t: i for i, (t, kind) in enumerate(zip(tokens, types, strict=True)) if kind == 1}
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # 3 = control (special), 4 = user-defined (added, not special); 5 = unused padding
    kinds = enumerate(zip(tokens, types, strict=True))
    added = [(i, t, kind == 3) for i, (t, kind) in kinds if kind in (3, 4)]
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for _, t, s in added])
    for i, t, _ in added:
        if tok.token_to_id(t) != i:
            raise ValueError(f"added token {t!r} got id {tok.token_to_id(t)}, not {i}")
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": s,
            }
            for i, t, s in added
        },
        "additional_special_tokens": [t for _, t, s in added if s],
        "bos_token": None,
        "eos_token": tokens[meta["tokenizer.ggml.eos_token_id"].value],
        "pad_token": tokens[meta["tokenizer.ggml.padding_token_id"].value],
        "unk_token": None,
        "chat_template": meta["tokenizer.chat_template"].value,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": N_CTX,
        "split_special_tokens": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# -- GGUF -----------------------------------------------------------------------


def write_gguf(path: Path, weights: dict[str, np.ndarray], meta: dict[str, Value]) -> None:
    from gguf import GGUFValueType, GGUFWriter, LlamaFileType

    w = GGUFWriter(path, "qwen2")
    w.add_type("model")
    w.add_name("tiny-qwen2-random")
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    for key, v in meta.items():
        sub = None if v.sub_type is None else GGUFValueType(v.sub_type)
        w.add_key_value(key, v.value, GGUFValueType(v.type), sub)
    # Same layout as HF ([out, in]); the writer reverses the dims as llama.cpp
    # expects. Qwen2 needs no q/k permutation. Tied: no output.weight.
    for name, tensor in weights.items():
        w.add_tensor(gguf_name(name), tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# -- MLX ------------------------------------------------------------------------


def convert_mlx(hf_dir: Path, mlx_dir: Path) -> None:
    from mlx_lm.convert import convert

    with contextlib.redirect_stdout(io.StringIO()):
        convert(str(hf_dir), str(mlx_dir), quantize=False, dtype="float32")


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m tests.tiny_model OUTDIR [TOKENIZER_GGUF]", file=sys.stderr)
        return 2
    source = Path(argv[1]) if len(argv) == 2 else DEFAULT_TOKENIZER_GGUF
    model = build_tiny_model(Path(argv[0]), source)
    for field in fields(model):
        print(f"{field.name}: {getattr(model, field.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
