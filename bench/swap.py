"""Swap latency: a request for a model that is not loaded, to its first token, when only
one model fits; hearth against llama-server's router mode, same build and files.

    .venv/bin/python -m bench.swap [--rounds 3] [--cold]

Both servers hold one model at a time (hearth: a memory budget that fits one;
llama-server: ``--models-dir`` with both GGUFs and ``--models-max 1``). Requests
alternate between the two packaged models, so every one loads its model after the
other is unloaded; each is a streamed completion of a few tokens, and its time to the
first token is the swap. ``--cold`` drops the page cache before each request (needs
root), so the model is read from disk. Medians per model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.compare import CACHE, LLAMA_BIN, OUT, VENV, free_port, serving
from server.config import load_models_file
from server.engine.residency import footprint

QWEN = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GEMMA = CACHE / "models" / "gemma-3-270m-q4_k_m.gguf"
CONTEXT = 4096


def first_token(base: str, model: str, cold: bool) -> float:
    if cold:
        subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=True)
    body = {"model": model, "prompt": "def add(a, b):", "max_tokens": 4, "stream": True}
    start = time.monotonic()
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                return time.monotonic() - start
    raise RuntimeError(f"no token from {model}")


def hearth(folder: Path, port: int) -> tuple[list[str], dict[str, str]]:
    (folder / "models.toml").write_text(
        f'default = "qwen"\n[models.qwen]\npath = "{QWEN}"\ncontext_length = {CONTEXT}\n'
        f'threads = 2\n[models.gemma]\npath = "{GEMMA}"\ncontext_length = {CONTEXT}\n'
        "threads = 2\n"
    )
    models = load_models_file(folder / "models.toml", folder).models
    budget = max(footprint(m) for m in models.values()) + 64 * 2**20  # one at a time
    command = ["env", f"HEARTH_MEMORY_BUDGET={budget}", str(VENV / "hearth"), "--models-file",
               str(folder / "models.toml"), "serve", "--port", str(port), "--no-pull"]  # fmt: skip
    return command, {"qwen": "qwen", "gemma": "gemma"}


def router(folder: Path, port: int) -> tuple[list[str], dict[str, str]]:
    models = folder / "models"
    models.mkdir()
    (models / "qwen.gguf").symlink_to(QWEN)
    (models / "gemma.gguf").symlink_to(GEMMA)
    command = [str(LLAMA_BIN / "llama-server"), "--models-dir", str(models), "--models-max", "1",
               "--port", str(port), "-c", str(CONTEXT), "-t", "2", "-tb", "2",
               "--no-webui"]  # fmt: skip
    return command, {"qwen": "qwen", "gemma": "gemma"}


def run(name: str, args: argparse.Namespace) -> dict[str, list[float]]:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"swap-{name}-"))
    command, names = (hearth if name == "hearth" else router)(folder, port)
    times: dict[str, list[float]] = {"qwen": [], "gemma": []}
    with serving(command, port, f"swap-{name}", ready_timeout=300) as base:
        if name == "llama-server":  # its /v1/models says what the router calls them
            listed = [m["id"] for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]]
            names = {k: next(i for i in listed if k in i) for k in names}
        first_token(base, names["qwen"], cold=False)  # qwen loaded, warm
        for _ in range(args.rounds):
            for model in ("gemma", "qwen"):
                times[model].append(first_token(base, names[model], args.cold))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    results = {name: run(name, args) for name in ("hearth", "llama-server")}
    cache = "cold (page cache dropped)" if args.cold else "warm (files in the page cache)"
    print(f"swap to first token, {cache}, median of {args.rounds}:")
    print("| model | hearth s | llama-server router s | hearth / llama-server |")
    print("|---|---|---|---|")
    for model in ("gemma", "qwen"):
        h = statistics.median(results["hearth"][model])
        peer = statistics.median(results["llama-server"][model])
        print(f"| {model} | {h:.2f} | {peer:.2f} | {h / peer:.2f}x |")


if __name__ == "__main__":
    main()
