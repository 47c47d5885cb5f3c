"""One model over two machines' memory, on one machine: two real ``hearth rpc-worker``
processes hold the default model's layers, a real server runs it, and a second copy of
the model runs alone beside it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import HEARTH, MODELS_FILE, _free_port, serve
from tests.solo_llama import solo_llama

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QWEN = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
MB = 2**20
PROC = Path("/proc/self/status")


def _rpc_build() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_rpc())


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not QWEN.exists(), reason="the default model is not pulled"),
    pytest.mark.skipif(
        not _rpc_build(), reason="llama-cpp-python built without RPC (HEARTH_LLAMA_RPC=0)"
    ),
]


@contextlib.contextmanager
def worker(log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real ``hearth rpc-worker`` on a free loopback port, once it accepts connections."""
    port = _free_port()
    command = [str(HEARTH), "rpc-worker", "--port", str(port), "--threads", "1"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"rpc-worker did not listen: {log.read_text(errors='replace')}")
        yield proc, f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def rss(proc: subprocess.Popen[bytes]) -> int:
    """A process's resident bytes (Linux's /proc; 0 elsewhere)."""
    if not PROC.exists():
        return 0
    with open(f"/proc/{proc.pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A server with ``split`` (the default model over two workers, every layer on them)
    and ``local`` (the same file alone); the workers' memory before and after the load."""
    folder = tmp_path_factory.mktemp("rpc")
    with worker(folder / "w1.log") as (w1, a1), worker(folder / "w2.log") as (w2, a2):
        before = (rss(w1), rss(w2))
        models = folder / "models.toml"
        common = f'path = "{QWEN}"\ncontext_length = 2048\nmax_sequences = 4\nthreads = 1\n'
        models.write_text(
            f'[models.split]\n{common}rpc_workers = ["{a1}", "{a2}"]\n\n[models.local]\n{common}'
        )
        with serve(folder / "server.log", ("split", "local"), models) as base:
            yield {
                "base": base, "workers": (w1, w2), "addresses": (a1, a2), "before": before,
                "after": (rss(w1), rss(w2)), "log": folder / "server.log",
            }  # fmt: skip


def complete(base: str, model: str, prompt: str, max_tokens: int = 24) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    resp = httpx.post(f"{base}/v1/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    text: str = resp.json()["choices"][0]["text"]
    return text


@pytest.mark.skipif(not PROC.exists(), reason="reads resident memory from Linux's /proc")
def test_the_workers_hold_the_layers(split: dict[str, object]) -> None:
    """Each worker took a share of the weights (about 200 MB of the 380 MB of layers and
    output each): the model really runs on them, not on the server's CPU."""
    before, after = split["before"], split["after"]
    assert isinstance(before, tuple) and isinstance(after, tuple)
    grown = [(a - b) // MB for a, b in zip(after, before, strict=True)]
    assert all(g > 100 for g in grown), f"worker memory grew by {grown} MiB"


def test_split_greedy_tokens_are_the_solo_greedy_choice(split: dict[str, object]) -> None:
    """At temperature 0, every token the split model produced is the argmax (within the
    float tolerance of tests/e2e/test_batching.py) when its prompt and answer are
    re-scored by the model alone in this process; and four prompts at once, so the
    split runs batches too."""
    import numpy as np

    base = str(split["base"])
    prompts = [CHATML.format(f"Write one sentence about the number {n}.") for n in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda p: complete(base, "split", p), prompts))
    answers.append(complete(base, "split", CHATML.format("Write a Python function that adds.")))
    prompts.append(CHATML.format("Write a Python function that adds."))
    scorer = solo_llama(
        model_path=str(QWEN), n_ctx=512, n_threads=1, logits_all=True, verbose=False
    )
    worst = 0.0
    for prompt, answer in zip(prompts, answers, strict=True):
        p = scorer.tokenize(prompt.encode(), add_bos=True, special=True)
        a = scorer.tokenize(answer.encode(), add_bos=False, special=True)
        assert len(a) >= 8 and scorer.detokenize(a).decode() == answer
        scorer.reset()
        scorer.eval(p + a)
        logits = np.asarray(scorer.scores)[len(p) - 1 : len(p) + len(a) - 1]
        chosen = logits[np.arange(len(a)), a]
        worst = max(worst, float((logits.max(axis=1) - chosen).max()))
    assert worst < 0.25, f"a split token was {worst:.3f} logits below the solo argmax"


def test_a_dead_worker_fails_its_model_only(split: dict[str, object]) -> None:
    """A worker killed mid-stream: that stream ends with a final error event, the server
    and the other model keep serving, and the split model answers 503 naming the worker
    it cannot reach (its engine restarts and finds the worker gone)."""
    base = str(split["base"])
    workers, addresses = split["workers"], split["addresses"]
    assert isinstance(workers, tuple) and isinstance(addresses, tuple)
    body = {
        "model": "split", "prompt": "Once upon a time", "max_tokens": 2000,
        "ignore_eos": True, "stream": True, "temperature": 0,
    }  # fmt: skip
    events: list[dict[str, object]] = []
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == 5:
                os.kill(workers[1].pid, signal.SIGKILL)
    assert len(events) > 5 and "error" in events[-1], events[-3:]
    assert all("choices" in e for e in events[:5])
    error = events[-1]["error"]
    assert isinstance(error, dict) and "engine crashed" in str(error["message"])

    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert "def" in complete(base, "local", CHATML.format("Write a Python function that adds."))
    deadline = time.monotonic() + 60
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        models = httpx.get(f"{base}/v1/models", timeout=10).json()["data"]
        state = next(m for m in models if m["id"] == "split")
        if state["state"] == "failed":
            break
        time.sleep(0.5)
    assert state["state"] == "failed", state
    refused = httpx.post(f"{base}/v1/completions", json={**body, "stream": False}, timeout=30)
    assert refused.status_code == 503, refused.text
    message = refused.json()["error"]["message"]
    assert f"RPC worker {addresses[1]} does not answer" in message, message
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert complete(base, "local", CHATML.format("Say hi."), max_tokens=4)
