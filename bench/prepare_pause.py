"""How long other streams pause while a huge prompt is rendered and tokenized.

    .venv/bin/python -m bench.prepare_pause [--prompt-tokens 100000] [--rounds 3]

A hearth server (the default model) streams one answer; while it streams, a chat
request whose prompt is about ``--prompt-tokens`` tokens arrives (it is then refused
for the context, after its render and tokenize: the work measured here). Reported: the
longest gap between the stream's chunks while the big request was being prepared,
against its longest gap without one, median over rounds. Run it on two checkouts (with
``PYTHONPATH`` on the other's tree) to compare.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from pathlib import Path

import httpx

from bench.compare import CACHE, VENV, free_port, serving

MODEL = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def gaps(base: str, big: str | None) -> float:
    """The longest gap between chunks of one stream; ``big`` is sent mid-stream."""
    body = {"model": "bench", "stream": True, "max_tokens": 160, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count upwards from one."}]}  # fmt: skip
    stamps: list[float] = []
    sender = None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                stamps.append(time.monotonic())
            if len(stamps) == 40 and big is not None:
                huge = {"model": "bench", "max_tokens": 1,
                        "messages": [{"role": "user", "content": big}]}  # fmt: skip
                sender = threading.Thread(
                    target=httpx.post, args=(f"{base}/v1/chat/completions",),
                    kwargs={"json": huge, "timeout": 600},
                )  # fmt: skip
                sender.start()
    if sender is not None:
        sender.join()
    tail = stamps[30:]
    return max(b - a for a, b in itertools.pairwise(tail))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--prompt-tokens", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="the model's threads (0: all)")
    args = parser.parse_args()
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "pause.toml").write_text(
        f'[models.bench]\npath = "{args.model}"\ncontext_length = 32768\nmax_sequences = 4\n'
        f"threads = {args.threads}\n"
    )
    big = "word " * args.prompt_tokens  # about one token a word
    port = free_port()
    command = [str(VENV / "hearth"), "--models-file", str(out / "pause.toml"), "serve",
               "--port", str(port), "--no-pull"]  # fmt: skip
    with serving(command, port, "prepare-pause") as base:
        alone = [gaps(base, None) for _ in range(args.rounds)]
        beside = [gaps(base, big) for _ in range(args.rounds)]
    print(f"longest gap between chunks, alone: {statistics.median(alone) * 1000:.0f} ms; "
          f"while a {args.prompt_tokens}-token prompt is prepared: "
          f"{statistics.median(beside) * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
