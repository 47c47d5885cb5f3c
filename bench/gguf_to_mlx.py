"""Convert a GGUF model to an MLX model folder for hearth's ``mlx`` backend.

    python3 -m venv .bench/convert-venv
    .bench/convert-venv/bin/pip install torch==2.13.0 transformers accelerate gguf \\
        "mlx[cpu]" mlx-lm==0.32.2
    .bench/convert-venv/bin/python bench/gguf_to_mlx.py \\
        ~/.cache/hearth/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \\
        ~/.cache/hearth/models/qwen2.5-coder-0.5b-instruct-mlx

(``torch==2.13.0`` resolves to a CPU build; on macOS drop ``[cpu]`` from mlx.) transformers
reads the GGUF and dequantizes every tensor to float32; with the GGUF quantizer cleared the
model saves as plain safetensors, which ``mlx_lm.convert`` casts to ``--dtype`` and, with
``--quantize``, requantizes to MLX's own 4- or 8-bit format. The output folder (config.json,
safetensors, tokenizer files, chat_template.jinja) must not exist; it appears only once
complete. float32 is the fastest on MLX's Linux CPU backend; float16 is about 3x slower.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from mlx_lm import convert
from transformers import AutoModelForCausalLM, AutoTokenizer


def save_hf(gguf: Path, hf_dir: Path) -> None:
    """Dequantize the GGUF into a Hugging Face folder: safetensors, config, tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are dequantized already: drop the GGUF quantizer and its config so the
    # folder saves, and later loads, as a plain float model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    flatten_rope(hf_dir / "config.json")


def flatten_rope(config_json: Path) -> None:
    """transformers 5 writes ``rope_parameters``; most mlx-lm 0.32 models read only the older
    ``rope_theta`` / ``rope_scaling`` keys and would silently fall back to their defaults."""
    config = json.loads(config_json.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if rope.get("rope_type", "default") != "default":
        config.setdefault("rope_scaling", rope)
    config_json.write_text(json.dumps(config, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--quantize", type=int, choices=[4, 8], help="MLX quantization bits")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float32")
    args = parser.parse_args()
    out: Path = args.outdir.expanduser().resolve()
    if out.exists():
        parser.error(f"{out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        hf_dir, mlx_dir = Path(tmp) / "hf", Path(tmp) / "mlx"
        save_hf(args.gguf.expanduser().resolve(), hf_dir)
        convert(
            str(hf_dir),
            str(mlx_dir),
            quantize=args.quantize is not None,
            q_bits=args.quantize,
            dtype=args.dtype,
        )
        shutil.move(mlx_dir, out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out}: {size:,.0f} MB in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
