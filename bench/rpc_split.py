"""What splitting a model over llama.cpp RPC workers costs: single-stream decode t/s of
the default model alone against the same model over two local ``hearth rpc-worker``s,
and what crosses the wire per token.

    .venv/bin/python bench/rpc_split.py [--tokens 128] [--rounds 3]

One server serves ``alone`` and ``split`` (the same GGUF, every layer on the workers);
rounds alternate the two, one stream at a time, every process on one thread (the split
runs its layers one worker after the other, so each side computes on one core at a
time). Then the workers sit behind counting TCP relays for one more stream of ``split``:
bytes each way and network turns (a send answered by a reply) per decoded token,
counted between the 16th token and the last, so prefill is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.compare import CACHE, VENV, free_port, wait_ready

MODEL = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PROMPT = (
    "<|im_start|>user\nWrite a long story about a lighthouse.<|im_end|>\n<|im_start|>assistant\n"
)
SKIP = 16  # tokens before the counted stretch: prefill and the first steps


@contextlib.contextmanager
def worker() -> Iterator[int]:
    port = free_port()
    cmd = [str(VENV / "hearth"), "rpc-worker", "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)  # binds at once; a probe would be taken for a client
        if proc.poll() is not None:
            raise RuntimeError(f"rpc-worker exited with {proc.returncode}")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


@dataclass
class Relay:
    """A TCP relay that counts the bytes each way and the turns: each time bytes go
    to the worker after bytes came back (or first), one request-reply exchange."""

    target: int
    port: int = field(default_factory=free_port)
    sent: int = 0
    received: int = 0
    turns: int = 0
    _last: str = "in"

    def snapshot(self) -> tuple[int, int, int]:
        return self.sent, self.received, self.turns

    def start(self) -> None:
        threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True).start()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(
            self._pipe(reader, up_writer, "out"), self._pipe(up_reader, writer, "in")
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str
    ) -> None:
        while data := await reader.read(1 << 20):
            if way == "out":
                self.sent += len(data)
                self.turns += self._last == "in"
            else:
                self.received += len(data)
            self._last = way
            writer.write(data)
            await writer.drain()
        writer.close()


def stream(
    base: str, model: str, tokens: int, at_skip: Callable[[], object] = lambda: None
) -> list[float]:
    """Stream ``tokens`` tokens: the arrival time of each; ``at_skip`` runs at token SKIP."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}  # fmt: skip
    times: list[float] = []
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=900) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith('data: {"error"'):
                raise RuntimeError(f"{model}: {line}")
            chunk = json.loads(line[6:]) if line.startswith("data: {") else {}
            if chunk.get("choices") and chunk["choices"][0]["text"]:  # a token, not the end
                times.append(time.perf_counter())
                if len(times) == SKIP:
                    at_skip()
    return times


def decode_rate(times: list[float]) -> float:
    return (len(times) - SKIP) / (times[-1] - times[SKIP - 1])


@contextlib.contextmanager
def server(workers: list[int]) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        common = f'path = "{MODEL}"\ncontext_length = 2048\nmax_sequences = 2\nthreads = 1\n'
        endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in workers)
        toml = Path(tmp) / "models.toml"
        toml.write_text(
            f"[models.alone]\n{common}\n[models.split]\n{common}rpc_workers = [{endpoints}]\n"
        )
        port = free_port()
        cmd = [str(VENV / "hearth"), "--models-file", str(toml), "serve", "--port", str(port),
               "--model", "alone", "--model", "split"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc, timeout=300)
            yield base
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"alone": [], "split": []}
    with worker() as w1, worker() as w2:
        with server([w1, w2]) as base:
            for name in rates:  # warm both once
                stream(base, name, SKIP + 4)
            for _ in range(args.rounds):
                for name, found in rates.items():
                    found.append(decode_rate(stream(base, name, args.tokens)))
        relays = [Relay(w1), Relay(w2)]
        for relay in relays:
            relay.start()
        time.sleep(0.5)
        with server([r.port for r in relays]) as base:
            stream(base, "split", SKIP + 4)
            before: list[tuple[int, int, int]] = []
            times = stream(base, "split", args.tokens, lambda: before.extend(snapshots(relays)))
            after = snapshots(relays)
    alone, split = statistics.median(rates["alone"]), statistics.median(rates["split"])
    print(f"decode, one stream, {args.tokens} tokens, median of {args.rounds}:")
    print(f"  alone {alone:.1f} t/s   split over 2 local workers {split:.1f} t/s   "
          f"split/alone {split / alone:.2f}x")  # fmt: skip
    counted = len(times) - SKIP
    for i, (b, a) in enumerate(zip(before, after, strict=True), 1):
        sent, received, turns = (x - y for x, y in zip(a, b, strict=True))
        print(f"  worker {i}: per token {sent / counted:,.0f} B to it, "
              f"{received / counted:,.0f} B back, {turns / counted:.2f} turns")  # fmt: skip


def snapshots(relays: list[Relay]) -> list[tuple[int, int, int]]:
    return [r.snapshot() for r in relays]


if __name__ == "__main__":
    main()
