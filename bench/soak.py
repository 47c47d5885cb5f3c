"""Soak: hold twice a server's queue capacity for a while and check that it stays sound.

Not a test: it starts its own ``hearth serve`` (a small ``max_sequences`` and
``HEARTH_MAX_QUEUE``), runs ``2 × (max_sequences + max_queue)`` clients that send
chat requests back to back (streamed and not, some leaving mid-stream) for
``--seconds``, and reports:

- the answers: only 200, 429 and 503 are allowed;
- leaks: ``hearth_requests_running`` and ``hearth_requests_waiting`` back to 0;
- memory: the server's VmRSS after the warm-up and at the end, within 5%.

    .venv/bin/python -m bench.soak --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from server.cli.pull import default_cache_dir
from server.config import load_models_file

ROOT = Path(__file__).resolve().parents[1]
HEARTH = Path(sys.executable).parent / "hearth"
ALLOWED = {200, 429, 503}
PROMPTS = [
    "Write a Python function that reverses a string.",
    "Explain what a mutex is in two sentences.",
    "List three uses of a hash map.",
    "What does `git rebase -i` do?",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the first RSS")
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--max-sequences", type=int, default=2)
    p.add_argument("--max-queue", type=int, default=2)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def start_server(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    path = load_models_file(ROOT / "models.toml", default_cache_dir()).models[args.model].path
    models = folder / "models.toml"
    models.write_text(
        f'[models.soak]\naliases = ["default"]\npath = "{path}"\n'
        f"context_length = {args.context}\nmax_sequences = {args.max_sequences}\n"
    )
    port = free_port()
    command = [str(HEARTH), "--models-file", str(models), "serve", "--port", str(port)]
    command += ["--model", "soak", "--no-pull"]
    env = {**os.environ, "HEARTH_MAX_QUEUE": str(args.max_queue), "HEARTH_LOG_LEVEL": "warning"}
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"soak: the server did not start; see {folder / 'server.log'}")


async def client(base: str, stop: float, counts: collections.Counter[str], seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        while time.monotonic() < stop:
            body = {
                "model": "default",
                "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                "max_tokens": rng.randint(8, 64),
                "stream": rng.random() < 0.5,
            }
            try:
                async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                    counts[str(resp.status_code)] += 1
                    if body["stream"] and resp.status_code == 200 and rng.random() < 0.1:
                        async for _ in resp.aiter_lines():
                            break  # leave mid-stream
                        counts["left mid-stream"] += 1
                        continue
                    await resp.aread()
                    if resp.status_code == 429:
                        await asyncio.sleep(rng.uniform(0.05, 0.3))
            except httpx.TransportError as exc:
                counts[f"transport error: {type(exc).__name__}"] += 1


async def soak(args: argparse.Namespace, base: str, pid: int) -> dict[str, object]:
    clients = 2 * (args.max_sequences + args.max_queue)
    counts: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    stop = started + args.seconds
    tasks = [asyncio.create_task(client(base, stop, counts, i)) for i in range(clients)]
    await asyncio.sleep(min(args.warmup, args.seconds / 2))
    rss_warm = rss_kib(pid)
    samples = [rss_warm]
    while time.monotonic() < stop:
        await asyncio.sleep(5)
        samples.append(rss_kib(pid))
    await asyncio.gather(*tasks)
    rss_end = rss_kib(pid)
    running = waiting = -1.0
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for _ in range(100):  # the last aborts reach the engine within a step
            text = (await http.get("/metrics")).text
            running = gauge(text, "hearth_requests_running")
            waiting = gauge(text, "hearth_requests_waiting")
            if running == waiting == 0:
                break
            await asyncio.sleep(0.1)
        served = (await http.post("/v1/chat/completions", json={
            "model": "default", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Say hi."}],
        })).status_code  # fmt: skip
    statuses = {k: v for k, v in counts.items() if k.isdigit()}
    transport_errors = [k for k in counts if k.startswith("transport error")]
    drift = (rss_end - rss_warm) / rss_warm if rss_warm else 0.0
    return {
        "seconds": round(time.monotonic() - started, 1),
        "clients": clients,
        "max_sequences": args.max_sequences,
        "max_queue": args.max_queue,
        "answers": dict(sorted(counts.items())),
        "only_200_429_503": set(map(int, statuses)) <= ALLOWED and not transport_errors,
        "running_after": running,
        "waiting_after": waiting,
        "rss_warm_mib": round(rss_warm / 1024, 1),
        "rss_end_mib": round(rss_end / 1024, 1),
        "rss_min_max_mib": [round(min(samples) / 1024, 1), round(max(samples) / 1024, 1)],
        "rss_drift_pct": round(100 * drift, 2),
        "served_after": served,
    }


def verdict(report: dict[str, object]) -> list[str]:
    problems = []
    if not report["only_200_429_503"]:
        problems.append(f"answers other than 200/429/503: {report['answers']}")
    if report["running_after"] != 0 or report["waiting_after"] != 0:
        problems.append("sequences leaked: running/waiting not back to 0")
    drift = report["rss_drift_pct"]
    assert isinstance(drift, float)
    if abs(drift) > 5:
        problems.append(f"RSS drifted {drift}% (limit 5%)")
    if report["served_after"] != 200:
        problems.append("the server did not answer a normal request afterwards")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hearth-soak-") as tmp:
        proc, base = start_server(args, Path(tmp))
        try:
            report = asyncio.run(soak(args, base, proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
    problems = verdict(report)
    report["ok"] = not problems
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>18}: {value}")
        for problem in problems:
            print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
