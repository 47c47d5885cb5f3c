"""Many requests without ``max_tokens`` at once: do they all start? hearth vs llama-server.

    .venv/bin/python bench/no_max_tokens.py --rounds 2 [--hearth-src DIR]

curl users and most chat clients leave ``max_tokens`` out. Each round starts hearth on
the default model with its models.toml settings (32,768-token KV, 16 sequences) and
llama-server with the same (``-c 32768 -np 16 -kvu``, and hearth's threads: every CPU),
one after the other, and sends ``--clients`` streamed chat requests at once, temperature
0, no ``max_tokens``. Each client reads for ``--seconds`` and then disconnects. Reported
per server: how many got a first token within 10 s, time to first token (median, max),
and content chunks received in the window (about tokens). ``--hearth-src`` runs hearth
from another checkout (for a before/after of hearth itself); the default is this one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.compare import LLAMA_BIN, OUT, ROOT, VENV, free_port, serving
from server.cli.pull import default_cache_dir
from server.config import load_models_file

TOPICS = [
    "the sea", "a cat", "rain", "autumn", "a compiler", "coffee", "snow", "a river",
    "the moon", "a garden", "a train", "bread", "a lamp", "wind", "a key", "salt",
]  # fmt: skip


def client(base: str, model: str, topic: str, start: float, seconds: float) -> tuple[float, int]:
    ask = {"role": "user", "content": f"Write a short poem about {topic}."}
    body = {"model": model, "temperature": 0, "stream": True, "messages": [ask]}
    first, chunks = float("inf"), 0
    try:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if time.monotonic() - start > seconds:
                    break
                if not line.startswith("data: {"):
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    chunks += 1
                    first = min(first, time.monotonic() - start)
    except httpx.HTTPError:
        pass
    return first, chunks


def run(name: str, command: list[str], port: int, args: argparse.Namespace, cwd: Path) -> str:
    with serving(command, port, f"no-max-tokens-{name}", cwd=cwd) as base:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            topics = TOPICS[: args.clients]
            results = list(
                pool.map(lambda t: client(base, "default", t, start, args.seconds), topics)
            )
    firsts = sorted(f for f, _ in results)
    started = sum(f <= 10 for f in firsts)
    median = statistics.median(firsts)
    return (
        f"| {name} | {started}/{args.clients} | {median:.2f} | {firsts[-1]:.2f} "
        f"| {sum(c for _, c in results)} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--hearth-src", type=Path, default=ROOT)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    models_file = ROOT / "models.toml"
    model = load_models_file(models_file, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
    print("| server | first token within 10 s | TTFT median (s) | TTFT max (s) | chunks |")
    print("|---|---|---|---|---|")
    for _ in range(args.rounds):
        port = free_port()
        # -c: hearth runs from --hearth-src (its own modules first on sys.path).
        hearth = [str(VENV / "python"), "-c", "import sys; from server.cli.main import main; "
                  "sys.exit(main())", "--models-file", str(models_file), "serve",
                  "--port", str(port), "--no-pull"]  # fmt: skip
        print(run("hearth", hearth, port, args, args.hearth_src), flush=True)
        port = free_port()
        peer = [str(LLAMA_BIN / "llama-server"), "-m", str(model), "--port", str(port),
                "-c", "32768", "-np", "16", "-kvu", "--no-webui", "-a", "default",
                "-t", str(os.cpu_count() or 1)]  # fmt: skip
        print(run("llama-server", peer, port, args, ROOT), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
