"""What one forward pass costs by the number of tokens it feeds, at a given context.

    .venv/bin/python -m bench.step_cost [--context-tokens 2700] [--flash-attention auto,true,false]

Loads the default model through hearth's llama.cpp backend, prefills one sequence with
``--context-tokens`` of source code, then times passes that feed 1, 2, 4, ... tokens of
that sequence at its end (the KV is cut back after each), median of 6. This is the cost
speculative decoding weighs: a draft of k tokens makes a pass of k + 1, and it pays
where the tokens it is expected to add are worth more than the pass's extra time. Run
once per ``options.flash_attention`` setting, each in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.compare import CACHE, ROOT

MODEL = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def measure(flash: str, context_tokens: int) -> dict[int, float]:
    from backends.base import LoadRequest, SamplingParams, Work
    from backends.llamacpp.backend import LlamaCppBackend

    setting: object = {"true": True, "false": False}.get(flash, flash)
    backend = LlamaCppBackend(LoadRequest(
        name="cost", path=MODEL, context_length=16384, max_sequences=4, threads=2,
        gpu_layers=None, tensor_split=None, chat_template=None, batch_tokens=512,
        options={"flash_attention": setting},
    ))  # fmt: skip
    text = "\n".join((ROOT / "server" / "engine" / name).read_text()
                     for name in ("loop.py", "hub.py", "scheduler.py"))  # fmt: skip
    prompt = backend.tokenize(text, add_special=False)[:context_tokens]
    fed = backend.add(0, prompt, SamplingParams(temperature=0))
    while fed < len(prompt):
        n = min(512, len(prompt) - fed)
        backend.step([Work(0, n, fed + n == len(prompt))])
        fed += n
    seq = backend._seqs[0]
    out = {}
    for n in SIZES:
        times = []
        for _ in range(6):
            seq.pending[:] = prompt[10 : 10 + n]
            start = time.perf_counter()
            backend.step([Work(0, n, True)])
            times.append(time.perf_counter() - start)
            backend._truncate(seq.slot, len(prompt))
        out[n] = statistics.median(times) * 1000
    backend.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context-tokens", type=int, default=2700)
    parser.add_argument("--flash-attention", default="true,false")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.context_tokens)))
        return
    rows = {}
    for flash in args.flash_attention.split(","):
        command = [sys.executable, "-m", "bench.step_cost", "--one", flash,
                   "--context-tokens", str(args.context_tokens)]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        rows[flash] = {int(k): v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
    print(f"ms per pass at {args.context_tokens} tokens of context, by tokens fed:")
    print("| flash_attention | " + " | ".join(str(n) for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for flash, row in rows.items():
        print(f"| {flash} | " + " | ".join(f"{row[n]:.0f}" for n in SIZES) + " |")


if __name__ == "__main__":
    if not Path(MODEL).exists():
        raise SystemExit(f"{MODEL} is missing: .venv/bin/hearth pull qwen2.5-coder-0.5b")
    main()
