"""Embeddings per second, hearth against llama-server ``--embedding``: same build, same GGUF.

    .venv/bin/python -m bench.embeddings [--rounds 2]

Two loads, each sent by 4 clients at once until every text is embedded: 1,000 short
texts (a line of code or a sentence, about 15 tokens) in requests of 32, and 100 texts
of about 500 tokens in requests of 4. Both servers embed with the packaged
all-MiniLM-L6-v2 (``hearth pull all-minilm-l6-v2``), mean pooling, 2 threads; hearth with
its defaults for an embedding model, llama-server with 8 slots of 512 tokens. The figure
is texts per second over the whole load (best of the rounds), and hearth's ratio.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

import httpx

from bench.compare import CACHE, LLAMA_BIN, OUT, VENV, free_port, serving

MODEL = CACHE / "models" / "all-minilm-l6-v2-f16.gguf"
CLIENTS = 4
LONG_TOKENS = 500

SENTENCE = (
    "parse the request body validate each field then write the record to the database "
    "and return its id retry on timeout log every failure with the request id close the "
    "connection when the client leaves cache the result for sixty seconds"
)
WORDS = SENTENCE.split(" ")


def short_texts(n: int) -> list[str]:
    kinds = (
        "def handler_{i}(request): return request.json()['items'][{i}]",
        "SELECT name, total FROM orders WHERE id = {i} ORDER BY total DESC;",
        "How do I read line {i} of a large file without loading all of it?",
        "const value{i} = await fetch(`/api/items/${{{i}}}`).then(r => r.json());",
    )
    return [kinds[i % len(kinds)].format(i=i) for i in range(n)]


def long_texts(base: str, n: int) -> list[str]:
    """``n`` texts of at most LONG_TOKENS tokens each, as the server counts them."""
    out = []
    for i in range(n):
        words = [f"{WORDS[(i + j) % len(WORDS)]}" for j in range(LONG_TOKENS)]
        while True:
            text = f"step {i}: " + " ".join(words)
            body = {"model": "minilm", "content": text}
            count = httpx.post(f"{base}/tokenize", json=body, timeout=60).json()["tokens"]
            if len(count) <= LONG_TOKENS:
                break
            words = words[: -(len(count) - LONG_TOKENS) - 1]
        out.append(text)
    return out


def embed_all(base: str, texts: list[str], per_request: int) -> float:
    """Texts per second: CLIENTS clients send the texts in requests of ``per_request``."""
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]

    def send(chunk: list[str]) -> int:
        body = {"model": "minilm", "input": chunk, "encoding_format": "float"}
        resp = httpx.post(f"{base}/v1/embeddings", json=body, timeout=600)
        resp.raise_for_status()
        data = resp.json()["data"]
        assert len(data) == len(chunk) and len(data[0]["embedding"]) == 384
        return len(data)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        done = sum(pool.map(send, chunks))
    return done / (time.monotonic() - start)


def commands(port: int, threads: int) -> dict[str, list[str]]:
    models = OUT / "models-embed.toml"
    models.write_text(
        f'[models.minilm]\npath = "{MODEL}"\ntask = "embed"\ncontext_length = 512\n'
        f"threads = {threads}\n"
    )
    return {
        "hearth": [str(VENV / "hearth"), "--models-file", str(models), "serve",
                   "--port", str(port), "--no-pull", "--model", "minilm"],
        "llama-server": [str(LLAMA_BIN / "llama-server"), "-m", str(MODEL), "--port", str(port),
                         "--embedding", "--pooling", "mean", "-t", str(threads),
                         "-tb", str(threads), "-np", "8", "-c", "4096", "-a", "minilm",
                         "--no-webui"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not MODEL.exists():
        raise SystemExit(f"{MODEL} is missing: .venv/bin/hearth pull all-minilm-l6-v2")
    loads = {"1,000 short texts": (short_texts(1000), 32), "100 texts of ~500 tokens": None}
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name in ("hearth", "llama-server"):
            port = free_port()
            with serving(commands(port, args.threads)[name], port, f"embed-{name}") as base:
                if loads["100 texts of ~500 tokens"] is None:
                    loads["100 texts of ~500 tokens"] = (long_texts(base, 100), 4)
                for load, spec in loads.items():
                    assert spec is not None
                    rate = embed_all(base, *spec)
                    best[(name, load)] = max(best.get((name, load), 0.0), rate)
    print(f"embeddings per second, best of {args.rounds} rounds, {CLIENTS} clients:")
    print("| load | hearth texts/s | llama-server texts/s | hearth / llama-server |")
    print("|---|---|---|---|")
    for load in loads:
        h, peer = best[("hearth", load)], best[("llama-server", load)]
        print(f"| {load} | {h:.1f} | {peer:.1f} | {h / peer:.2f}x |")


if __name__ == "__main__":
    main()
