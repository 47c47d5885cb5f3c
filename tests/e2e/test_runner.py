"""Each model's engine in a runner process of its own: a native crash in one fails only
that model's requests, the runner comes back, a crash loop ends with the model
``failed``, and a runner whose step hangs is replaced. The server process never exits."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve

pytestmark = pytest.mark.e2e

MODELS = load_models_file(MODELS_FILE, default_cache_dir()).models
ROOT = Path(__file__).resolve().parents[2]  # where tests.crashing is imported from
CRASHING = {"HEARTH_PLUGINS": "crashing=tests.crashing:CrashingPlugin", "PYTHONPATH": str(ROOT)}


def models(base: str) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=10).json()["data"]}


def wait_state(base: str, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = models(base)[name]
        if model["state"] == state:
            return model
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {state}: {models(base)[name]}")


def stream(base: str, model: str, started: concurrent.futures.Future[None] | None = None) -> list[
    dict[str, Any]
]:  # fmt: skip
    """A long streamed chat; its parsed chunks (an error event is one of them)."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 400,
        "ignore_eos": True,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Tell a long story."}],
    }
    if "gemma" in model:
        body = {k: v for k, v in body.items() if k != "messages"} | {"prompt": "Once upon a"}
    route = "/v1/completions" if "gemma" in model else "/v1/chat/completions"  # fmt: skip
    chunks = []
    with httpx.stream("POST", f"{base}{route}", json=body, timeout=300) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
                if started is not None and not started.done():
                    started.set_result(None)
    return chunks


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[str, subprocess.Popen[bytes]]
]:  # fmt: skip
    folder = tmp_path_factory.mktemp("runners")
    qwen, gemma = MODELS["qwen2.5-coder-0.5b"].path, MODELS["gemma-3-270m"].path
    (folder / "models.toml").write_text(
        f'[models.qwen]\npath = "{qwen}"\ncontext_length = 8192\nmax_sequences = 4\n'
        f'[models.gemma]\npath = "{gemma}"\ncontext_length = 4096\nmax_sequences = 4\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    with serve(folder / "server.log", ("qwen", "gemma"), folder / "models.toml", procs=procs) as b:
        yield b, procs[0]


def test_a_segfault_in_one_runner_fails_only_its_own_streams(
    two_models: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, server = two_models
    qwen = models(base)["qwen"]
    assert qwen["runner_pid"] and qwen["runner_pid"] != models(base)["gemma"]["runner_pid"]
    assert qwen["resident_bytes"] > 100 * 2**20
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        started = [concurrent.futures.Future[None]() for _ in range(4)]
        crashed = [pool.submit(stream, base, "qwen", s) for s in started]
        others = [pool.submit(stream, base, "gemma") for _ in range(4)]
        concurrent.futures.wait(started, timeout=120)
        os.kill(qwen["runner_pid"], signal.SIGSEGV)
        for future in crashed:
            errors = [c for c in future.result() if "error" in c]
            assert len(errors) == 1, errors
            assert "SIGSEGV" in errors[0]["error"]["message"]
        for future in others:
            chunks = future.result()
            assert not [c for c in chunks if "error" in c]
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    restarted = wait_state(base, "qwen", "ready")
    assert restarted["runner_pid"] != qwen["runner_pid"]
    body = {"model": "qwen", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 200
    assert server.poll() is None


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "m.fake").write_text("")
    (tmp_path / "models.toml").write_text(
        f'[models.boom]\nbackend = "crashing"\npath = "{tmp_path / "m.fake"}"\n'
        "context_length = 512\n"
    )
    env = {**CRASHING, "HEARTH_ENGINE_HANG_SECONDS": "3"}
    with serve(tmp_path / "server.log", ("boom",), tmp_path / "models.toml", env=env) as base:
        yield base


def chat(base: str, text: str) -> httpx.Response:
    body = {"model": "boom", "max_tokens": 20, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def test_a_crash_loop_leaves_the_model_failed_and_the_server_up(crashing: str) -> None:
    base = crashing
    assert chat(base, "fine").json()["choices"][0]["message"]["content"] == "fine"
    for attempt in range(3):
        wait_state(base, "boom", "ready")
        r = chat(base, "CRASH now")
        assert r.status_code == 500, r.text
        assert "crashed (was killed by SIGSEGV)" in r.json()["error"]["message"], attempt
    failed = wait_state(base, "boom", "failed")
    assert "crashed 3 times" in failed["error"]
    r = chat(base, "fine")
    assert r.status_code == 503 and "crashed 3 times" in r.json()["error"]["message"]
    ready = httpx.get(f"{base}/health/ready", timeout=10)
    assert ready.status_code == 503 and "boom" in ready.text
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200


def test_a_runner_whose_step_hangs_is_replaced(crashing: str) -> None:
    base = crashing
    before = wait_state(base, "boom", "ready")["runner_pid"]
    r = chat(base, "HANG here")
    assert r.status_code == 500 and "SIGKILL" in r.json()["error"]["message"], r.text
    after = wait_state(base, "boom", "ready")["runner_pid"]
    assert after != before
    assert chat(base, "fine again").json()["choices"][0]["message"]["content"] == "fine again"
