"""Coding agents' first and second turn, hearth against llama-server, same build and GGUF.

    .venv/bin/python -m bench.agents --agent claude   # Claude Code, /v1/messages
    .venv/bin/python -m bench.agents --agent codex    # Codex, /v1/responses

Each server in turn (the GGUF, context, threads and slots of bench/compare.py) serves
the agent headless with its default system prompt and tools: a first turn in a new
session, then a second turn resuming it. Claude Code's time to first token is when it
prints the first text it received; Codex shows none, so its figure is the whole turn's
wall time, which a short answer leaves mostly to the prompt's prefill. Also reported:
the prompt tokens read from cache (Claude Code's ``cache_read_input_tokens``), and the
ratios. Needs the agents in the cache (scripts/test installs them) and llama-server
(bench/build_llama_server.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.compare import CACHE, OUT, VENV, free_port, server_commands, serving
from server.config import load_models_file
from server.engine.residency import footprint

BIN = CACHE / "clients" / "node_modules" / ".bin"
MODEL = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
OTHER = CACHE / "models" / "gemma-3-270m-q4_k_m.gguf"  # the model swapped to and from
FIRST = "What is the capital of France? Answer in one word. Do not use any tool."
SECOND = "And of Germany? One word, no tools."
MAX_OUTPUT = 512  # the answer's length does not matter here; its first token does
IDLE_MS = 1_800_000


def _run(command: list[str], home: Path, env: dict[str, str]) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run(command, cwd=home, env={"PATH": os.environ["PATH"], "HOME": str(home),
                          **env}, capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
    return done.stdout + done.stderr, time.monotonic() - start


def claude(base: str, home: Path, prompt: str, session: str | None) -> dict[str, Any]:
    """One turn; its time to first token is when Claude Code prints the first text delta
    it received (``--include-partial-messages``), counted from its start."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home),
           "CLAUDE_CONFIG_DIR": str(home / ".claude"), "ANTHROPIC_BASE_URL": base,
           "ANTHROPIC_API_KEY": "unused", "ANTHROPIC_MODEL": "bench",
           "ANTHROPIC_SMALL_FAST_MODEL": "bench", "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT),
           # Claude Code gives up on a stream silent for 300 s and sends it again:
           # llama-server sends nothing while it prefills a 19,000-token prompt on 2 cores.
           "CLAUDE_STREAM_IDLE_TIMEOUT_MS": str(IDLE_MS)}  # fmt: skip
    resume = ["--resume", session] if session else []
    command = [str(BIN / "claude"), "-p", "--output-format", "stream-json", "--verbose",
               "--include-partial-messages", "--max-turns", "1", *resume, prompt]  # fmt: skip
    start, first, result = time.monotonic(), None, None
    with subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, text=True,
                          stderr=subprocess.DEVNULL) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if first is None and '"text_delta"' in line:
                first = time.monotonic() - start
            if line.startswith('{"type":"result"'):
                result = json.loads(line)
    if result is None or first is None:
        raise RuntimeError(f"claude gave no answer (exit {proc.returncode})")
    usage = result["usage"]
    return {"session": result["session_id"], "seconds": first,
            "prompt": usage["input_tokens"] + usage["cache_read_input_tokens"],
            "cached": usage["cache_read_input_tokens"]}  # fmt: skip


def codex(base: str, home: Path, prompt: str, session: str | None) -> dict[str, Any]:
    (home / "config.toml").write_text(
        f'model = "bench"\nmodel_provider = "local"\nmodel_max_output_tokens = {MAX_OUTPUT}\n'
        f'[model_providers.local]\nname = "local"\nbase_url = "{base}/v1"\n'
        'wire_api = "responses"\nrequest_max_retries = 0\nstream_max_retries = 0\n'
    )
    resume = ["resume", session] if session else []
    command = [str(BIN / "codex"), "exec", *resume, "--skip-git-repo-check", prompt]
    out, seconds = _run(command, home, {"CODEX_HOME": str(home)})
    found = re.search(r"session id: (\S+)", out)
    used = re.search(r"tokens used\s+([\d,]+)", out)  # prompt and answer together
    return {"session": found.group(1) if found else session, "seconds": seconds,
            "prompt": used.group(1).replace(",", "") if used else None, "cached": None}  # fmt: skip


AGENTS = {"claude": claude, "codex": codex}


def run(name: str, agent: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    command = server_commands(args, args.model, port)[name]
    with serving(command, port, f"{agent}-{name}", ready_timeout=300) as base:
        home = Path(tempfile.mkdtemp(prefix=f"{agent}-{name}-"))
        first = AGENTS[agent](base, home, FIRST, None)
        second = AGENTS[agent](base, home, SECOND, first["session"])
    return {"first": first, "second": second}


def restarted(agent: str, args: argparse.Namespace) -> dict[str, Any]:
    """hearth alone: a first turn on a fresh server (nothing saved); after a restart, a
    new session's first turn, with the prompt cache's disk tier; then a request to a
    second model that takes the first one's memory (a memory budget that holds one),
    and a new session's first turn on the first model again."""
    cache = Path(tempfile.mkdtemp(prefix="prompt-cache-"))
    models = OUT / "models-swap.toml"
    models.write_text(
        f'default = "bench"\n[models.bench]\npath = "{args.model}"\n'
        f"context_length = {args.context}\nmax_sequences = {args.parallel}\n"
        f'threads = {args.threads}\n[models.other]\npath = "{OTHER}"\n'
        f"context_length = 4096\nthreads = {args.threads}\n"
    )
    config = load_models_file(models, CACHE / "models").models
    budget = max(footprint(config["bench"]), footprint(config["other"])) + 64 * 2**20
    # One project folder and agent home: each turn is a new session (no resume) of the
    # same user in the same project, whose preamble is the same.
    home = Path(tempfile.mkdtemp(prefix=f"{agent}-project-"))
    out: dict[str, Any] = {}
    for label in ("fresh", "restarted"):
        port = free_port()
        command = ["env", f"HEARTH_PROMPT_CACHE_DIR={cache}", f"HEARTH_MEMORY_BUDGET={budget}",
                   str(VENV / "hearth"), "--models-file", str(models), "serve",
                   "--port", str(port), "--no-pull", "--model", "bench"]  # fmt: skip
        with serving(command, port, f"{agent}-hearth-{label}", ready_timeout=300) as base:
            out[label] = AGENTS[agent](base, home, FIRST, None)
            time.sleep(5)  # the saved state reaches the disk on a thread of its own
            if label == "restarted":
                body = {"model": "other", "prompt": "x", "max_tokens": 1}
                httpx.post(f"{base}/v1/completions", json=body, timeout=300).raise_for_status()
                out["swapped back"] = AGENTS[agent](base, home, FIRST, None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", choices=sorted(AGENTS), default="claude")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--restart", action="store_true",
                        help="hearth only: a new session's first turn after a restart")  # fmt: skip
    args = parser.parse_args()
    if args.restart:
        r = restarted(args.agent, args)
        fresh = r["fresh"]["seconds"]
        for label, t in r.items():
            print(f"{label}: {t['seconds']:.1f} s ({t['seconds'] / fresh:.3f}x of fresh), "
                  f"prompt {t['prompt']}, cached {t['cached']}")  # fmt: skip
        return
    results: dict[str, list[dict[str, Any]]] = {"hearth": [], "llama-server": []}
    for _ in range(args.rounds):
        for name in results:
            results[name].append(run(name, args.agent, args))
    measure = "TTFT s" if args.agent == "claude" else "turn s"
    print(f"| server | turn | {measure} | prompt tokens | read from cache |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        for r in runs:
            for which in ("first", "second"):
                t = r[which]
                print(f"| {name} | {which} | {t['seconds']:.1f} | {t['prompt']} | {t['cached']} |")
    for which in ("first", "second"):
        h = sum(r[which]["seconds"] for r in results["hearth"])
        peer = sum(r[which]["seconds"] for r in results["llama-server"])
        print(f"{which} turn, hearth / llama-server: {h / peer:.2f}x")
    for name, runs in results.items():
        ratio = sum(r["second"]["seconds"] for r in runs) / sum(r["first"]["seconds"] for r in runs)
        print(f"{name}: second turn / first turn: {ratio:.3f}x")


if __name__ == "__main__":
    main()
