"""Prompt and decode speed of llama.cpp's CPU paths, through hearth's own backend.

    .venv/bin/python bench/cpu_paths.py \\
        --candidate "native build, repack off=DIR_A:false" \\
        --candidate "no-AMX build, repack on=DIR_B:true"

Each candidate is ``LABEL=DIR:REPACK``: ``DIR`` holds an installed llama-cpp-python
(``pip install --target DIR WHEEL``; empty: the one in this venv) and ``REPACK`` is
models.toml's ``weight_repack`` (``true``, ``false`` or ``auto``). Every candidate runs
in a process of its own, so one that crashes (llama.cpp's AMX path does) is reported
as such and the others still run. Per candidate, interleaved over ``--rounds``: the
prompt speed of a ``--prompt``-token prompt (fed in 512-token chunks, as the engine
does), the decode speed of one sequence, and the aggregate decode speed of
``--batch`` sequences stepping together. The median of the rounds is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hearth" / "models"
MODEL = CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
ROOT = Path(__file__).resolve().parents[1]


def measure(model: Path, repack: str, prompt_len: int, batch: int, steps: int) -> dict[str, float]:
    """One candidate, in this process: tokens per second of prefill and decode."""
    from backends.base import LoadRequest, SamplingParams, Work
    from backends.llamacpp.backend import LlamaCppBackend

    setting = {"true": True, "false": False, "auto": None}[repack]
    request = LoadRequest(
        name="bench", path=model, context_length=prompt_len + batch * (steps + 8) + 64,
        max_sequences=batch, threads=os.cpu_count() or 1, gpu_layers=None,
        tensor_split=None, chat_template=None, batch_tokens=512,
        options={"prefix_cache": False}, weight_repack=setting,
    )  # fmt: skip
    backend = LlamaCppBackend(request)
    greedy = SamplingParams(temperature=0.0, ignore_eos=True)
    words = backend.tokenize(
        "def f(x):\n    return x * 2\n" * (prompt_len // 8 + 1), add_special=False
    )
    prompt = words[:prompt_len]
    backend.add(0, prompt, greedy)
    start = time.perf_counter()
    fed = 0
    while fed < prompt_len:
        n = min(512, prompt_len - fed)
        backend.step([Work(0, n, fed + n == prompt_len)])
        fed += n
    prefill = prompt_len / (time.perf_counter() - start)
    backend.release(0)
    rates = []
    for n in (1, batch):
        for i in range(n):
            backend.add(i, prompt[: 16 + i], greedy)
            backend.step([Work(i, 16 + i, True)])
        start = time.perf_counter()
        for _ in range(steps):
            backend.step([Work(i, 1, True) for i in range(n)])
        rates.append(n * steps / (time.perf_counter() - start))
        for i in range(n):
            backend.release(i)
    backend.close()
    return {"prompt": prefill, "decode1": rates[0], f"decode{batch}": rates[1]}


def run_candidate(spec: str, args: argparse.Namespace) -> dict[str, float] | str:
    rest = spec.partition("=")[2]
    folder, _, repack = rest.rpartition(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (folder, str(ROOT)) if p)}
    command = [sys.executable, __file__, "--one", repack, "--model", str(args.model)]
    command += ["--prompt", str(args.prompt), "--batch", str(args.batch)]
    command += ["--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        return f"exit {done.returncode}" + (" (SIGSEGV)" if done.returncode == -11 else "")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidate", action="append", default=[], metavar="LABEL=DIR:REPACK")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = measure(args.model, args.one, args.prompt, args.batch, args.steps)
        print(json.dumps(result))
        return
    results: dict[str, list[dict[str, float] | str]] = {c: [] for c in args.candidate}
    for _ in range(args.rounds):
        for spec in args.candidate:
            results[spec].append(run_candidate(spec, args))
    print(f"| candidate | prompt t/s ({args.prompt} tokens) | decode t/s, 1 | "
          f"decode t/s, {args.batch} in all |")  # fmt: skip
    print("|---|---|---|---|")
    for spec, rounds in results.items():
        label = spec.partition("=")[0]
        failed = [r for r in rounds if isinstance(r, str)]
        if failed:
            print(f"| {label} | {failed[0]} | | |")
            continue
        cells = [
            f"{statistics.median(r[key] for r in rounds if isinstance(r, dict)):.1f}"
            for key in ("prompt", "decode1", f"decode{args.batch}")
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
