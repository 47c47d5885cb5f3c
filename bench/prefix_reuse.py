"""Time to first token for a repeated ~2,000-token prompt, with and without prefix reuse.

    .venv/bin/python bench/prefix_reuse.py

Starts hearth twice on the default model, once as configured (prefix cache on) and
once with ``options.prefix_cache = false``, sends the same long prompt with a small
new question at the end five times to each (as an IDE resending a file does), and
reports the median time to first token of the repeats.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.compare import CACHE, VENV, free_port, wait_ready

FILE_LINES = [f"def helper_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(160)]


def ttft(base: str, question: str) -> float:
    body = {
        "model": "default",
        "stream": True,
        "max_tokens": 4,
        "temperature": 0,
        "messages": [
            {
                "role": "system",
                "content": "You are a coding assistant. The file:\n" + "".join(FILE_LINES),
            },
            {"role": "user", "content": question},
        ],
    }
    start = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as resp:
        for line in resp.iter_lines():
            if (
                line.startswith("data: {")
                and '"content": "' in line
                and '"content": ""' not in line
            ):
                return time.perf_counter() - start
    raise RuntimeError("no token")


def measure(prefix_cache: bool) -> tuple[float, float, int]:
    model = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "models.toml"
        toml.write_text(
            f'[models.default]\npath = "{model}"\ncontext_length = 8192\nmax_sequences = 4\n'
            f"options = {{ prefix_cache = {json.dumps(prefix_cache)} }}\n"
        )
        port = free_port()
        cmd = [str(VENV / "hearth"), "--models-file", str(toml), "serve", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc)
            first = ttft(base, "What does helper_3 return for 2?")
            repeats = [ttft(base, f"What does helper_{i} return for 2?") for i in range(5)]
            tokens = httpx.get(f"{base}/metrics").text
            hits = sum(
                int(float(line.split()[-1]))
                for line in tokens.splitlines()
                if line.startswith("hearth_prefix_cache_hit_tokens_total{")
            )
            return first, statistics.median(repeats), hits
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    for enabled in (True, False):
        first, repeat, hits = measure(enabled)
        label = "prefix reuse on " if enabled else "prefix reuse off"
        print(
            f"{label}: first request TTFT {first:.2f} s, repeats median {repeat:.3f} s, "
            f"prompt tokens served from cache {hits}"
        )


if __name__ == "__main__":
    main()
