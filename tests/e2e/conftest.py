"""One real ``hearth serve`` process for the whole e2e session, and clients for it.

The server loads both models from the repository's models.toml without pulling; the
GGUF files must already be in the model cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

MODELS = ("qwen2.5-coder-0.5b", "gemma-3-270m")
STARTUP_TIMEOUT_S = 120.0
HEARTH = Path(sys.executable).parent / "hearth"
MODELS_FILE = Path(__file__).resolve().parents[2] / "models.toml"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _models_state(client: httpx.Client) -> dict[str, str] | None:
    """Each model's state once /health answers; None while the server is not up."""
    try:
        if client.get("/health").status_code != 200:
            return None
        models = client.get("/v1/models").json()["data"]
    except httpx.TransportError:
        return None
    return {m["id"]: "loaded" if m["loaded"] else m["state"] for m in models}


def _wait_ready(
    proc: subprocess.Popen[bytes],
    base: str,
    log: Path,
    models: tuple[str, ...],
    api_key: str | None = None,
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    problem = f"not ready within {STARTUP_TIMEOUT_S:.0f}s"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    with httpx.Client(base_url=base, timeout=5.0, headers=headers) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                problem = f"exited with status {proc.returncode}"
                break
            states = _models_state(client)
            if states is not None:
                if all(states.get(m) == "loaded" for m in models):
                    return
                if "failed" in (states.get(m) for m in models):
                    problem = f"a model failed to load: {states}"
                    break
            time.sleep(0.5)
    raise RuntimeError(f"hearth serve {problem}; its log:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def serve(
    log: Path,
    models: tuple[str, ...] = MODELS,
    models_file: Path = MODELS_FILE,
    env: dict[str, str] | None = None,
    wait_for: tuple[str, ...] | None = None,
    procs: list[subprocess.Popen[bytes]] | None = None,
    api_key: str | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """A real ``hearth serve`` process on ``port`` (default: a free one); yields its base
    URL. It waits for ``wait_for`` (default: every model) to load; ``procs`` receives the
    process. ``api_key`` is for a server that asks for one (its key file or keys come in
    ``env``)."""
    port = port or _free_port()
    command = [str(HEARTH), "--models-file", str(models_file), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-pull"]
    for model in models:
        command += ["--model", model]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        # Each server its own prompt cache, unless the test shares one on purpose.
        own = {"HEARTH_PROMPT_CACHE_DIR": str(log.parent / f"prompt-cache-{port}")}
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, **own, **(env or {})},
        )  # fmt: skip
        if procs is not None:
            procs.append(proc)
        try:
            _wait_ready(proc, base, log, models if wait_for is None else wait_for, api_key)
            yield base
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(tmp_path_factory.mktemp("hearth") / "server.log") as base:
        yield base


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    """The real openai client; no retries, so an error surfaces at once."""
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as oa:
        yield oa


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60.0) as c:
        yield c


Tokenize = Callable[..., list[int]]


def wait_idle(base_url: str, timeout: float = 60.0) -> None:
    """Until no model runs or queues a sequence: a stream an earlier test left (its
    client gone, its abort still on the way) would share the batch, and a batch of two
    computes the last bits of the logits otherwise than one alone."""
    busy = re.compile(r"^hearth_requests_(?:running|waiting)\{[^}]*\} (\S+)$", re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        if not any(float(v) for v in busy.findall(text)):
            return
        time.sleep(0.1)
    raise AssertionError(f"the server was still busy after {timeout:.0f} s")


@pytest.fixture(scope="session")
def tokenize(http: httpx.Client) -> Tokenize:
    """``tokenize(text, add_special=False, model="default")``: the server's own tokenizer."""

    def run(text: str, *, add_special: bool = False, model: str = "default") -> list[int]:
        body = {"model": model, "content": text, "add_special": add_special}
        response = http.post("/tokenize", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["count"] == len(data["tokens"])
        tokens: list[int] = data["tokens"]
        return tokens

    return run
