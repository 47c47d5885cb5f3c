"""How often a batched greedy answer equals the same prompt's solo greedy answer.

    .venv/bin/python bench/greedy_match.py --url http://127.0.0.1:8080/v1 --model default

Sends 8 prompts one at a time (solo), then all 8 at once (batched), at temperature 0,
and counts identical answers. Batched arithmetic in llama.cpp differs from
one-sequence arithmetic in the last bits, so some answers may drift after a near-tie;
tests/e2e/test_batching.py proves each batched token is still the solo argmax.
"""

from __future__ import annotations

import argparse
import concurrent.futures

import httpx

PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Explain what a hash map is in three sentences.",
    "Write a haiku about compilers.",
    "List five uses of the Unix `find` command.",
    "What is the difference between a process and a thread?",
    "Write a SQL query that counts orders per customer.",
    "Describe the TCP three-way handshake.",
    "Write a bash one-liner that counts lines in all .py files.",
]


def ask(url: str, model: str, prompt: str, max_tokens: int) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    reply = httpx.post(f"{url}/chat/completions", json=body, timeout=600)
    reply.raise_for_status()
    content: str = reply.json()["choices"][0]["message"]["content"]
    return content


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    solo = [ask(args.url, args.model, p, args.max_tokens) for p in PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        batched = list(pool.map(lambda p: ask(args.url, args.model, p, args.max_tokens), PROMPTS))
    same = sum(a == b for a, b in zip(solo, batched, strict=True))
    print(f"batched greedy == solo greedy for {same} of {len(PROMPTS)} prompts")


if __name__ == "__main__":
    main()
