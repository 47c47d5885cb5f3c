"""SIGTERM drains, a cut stream ends with an error event, a client gone before its
first chunk is not waited for, the server listens while models load, a failed model
fails alone."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve
from tests.e2e.test_batching import metric

pytestmark = pytest.mark.e2e


def qwen_path() -> Path:
    return load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path


def models_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        f'[models.qwen]\npath = "{qwen_path()}"\ncontext_length = 4096\nmax_sequences = 4\n' + extra
    )
    return path


def stream_events(base: str, max_tokens: int, started: threading.Event) -> list[str]:
    body = {
        "model": "qwen", "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }  # fmt: skip
    events = []
    with (
        httpx.Client(timeout=120) as c,
        c.stream("POST", f"{base}/v1/chat/completions", json=body) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 2:
                    started.set()
    return events


def run_drain(
    tmp_path: Path, drain: str, max_tokens: int
) -> tuple[list[list[str]], dict[str, object]]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {"HEARTH_DRAIN_SECONDS": drain}
    seen: dict[str, object] = {}
    with serve(tmp_path / "log", ("qwen",), models_file(tmp_path), env, procs=procs) as base:
        starts = [threading.Event() for _ in range(3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(stream_events, base, max_tokens, s) for s in starts]
            assert all(s.wait(60) for s in starts)
            procs[0].send_signal(signal.SIGTERM)
            late = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            seen["late_status"] = late.status_code
            seen["late_retry_after"] = late.headers.get("retry-after")
            seen["ready_status"] = httpx.get(f"{base}/health/ready", timeout=30).status_code
            streams = [f.result(timeout=120) for f in futures]
        seen["exit_code"] = procs[0].wait(60)
    seen["log_tail"] = (tmp_path / "log").read_text(errors="replace")[-4000:]
    return streams, seen


def test_sigterm_lets_running_streams_finish(tmp_path: Path) -> None:
    streams, seen = run_drain(tmp_path, drain="60", max_tokens=40)
    assert seen["late_status"] == 503 and seen["late_retry_after"]
    assert seen["ready_status"] == 503
    for events in streams:
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert "choices" in last, f"stream ended with {last}"
        assert last["choices"][0]["finish_reason"] == "length"
    assert seen["exit_code"] == 0, seen["log_tail"]


def test_a_short_window_cuts_streams_with_an_error_event(tmp_path: Path) -> None:
    streams, seen = run_drain(tmp_path, drain="1", max_tokens=1200)
    for events in streams:
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["code"] == "model_unavailable" and "shutting down" in error["message"]
    assert seen["exit_code"] == 0, seen["log_tail"]


def send_and_leave(base: str, path: str, body: dict[str, object]) -> None:
    """A client that sends a whole request and closes the connection at once."""
    host, port = base.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
        )


def ended(http: httpx.Client) -> float:
    """Requests that have ended, whatever their finish reason."""
    reasons = ("aborted", "length", "stop", "error")
    return sum(
        metric(http, "hearth_requests_total", model="qwen", finish_reason=r) for r in reasons
    )


def test_clients_gone_before_the_first_chunk_leave_nothing_to_drain(tmp_path: Path) -> None:
    """Chat, completions and /infill streams whose clients leave at once are aborted,
    and a drain with a ten-minute window then ends as soon as it starts."""
    long = {"model": "qwen", "stream": True, "ignore_eos": True, "max_tokens": 500}
    story = [{"role": "user", "content": "Tell a story."}]
    streams = [
        ("/v1/chat/completions", {**long, "messages": story}),
        ("/v1/completions", {**long, "prompt": "Once upon a time"}),
        ("/infill", {**long, "input_prefix": "def f(", "input_suffix": "\n"}),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    env = {"HEARTH_DRAIN_SECONDS": "600"}
    with (
        serve(tmp_path / "log", ("qwen",), models_file(tmp_path), env, procs=procs) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        for path, body in streams:
            send_and_leave(base, path, body)
        deadline = time.monotonic() + 120
        while ended(http) < 3:
            assert time.monotonic() < deadline, http.get("/metrics").text
            time.sleep(0.2)
        assert metric(http, "hearth_requests_total", model="qwen", finish_reason="aborted") == 3
        assert metric(http, "hearth_requests_running", model="qwen") == 0
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(60) == 0  # not the 600 s window


def test_a_model_that_fails_to_load_fails_alone(tmp_path: Path) -> None:
    extra = '[models.broken]\npath = "/nonexistent/broken.gguf"\n'
    with (
        serve(
            tmp_path / "log", ("qwen", "broken"), models_file(tmp_path, extra), wait_for=("qwen",)
        ) as base,
        httpx.Client(base_url=base, timeout=60) as http,
    ):
        models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
        assert models["broken"]["state"] == "failed"
        assert "/nonexistent/broken.gguf" in models["broken"]["error"]
        refused = http.post("/v1/completions", json={"model": "broken", "prompt": "x"})
        assert refused.status_code == 503
        assert "broken.gguf" in refused.json()["error"]["message"]
        ok = http.post("/v1/completions", json={"model": "qwen", "prompt": "x", "max_tokens": 2})
        assert ok.status_code == 200
        assert http.get("/health").status_code == 200
        assert http.get("/health/ready").status_code == 503


def feed_when_read(fifo: Path, data: bytes) -> None:
    """Write ``data`` into a named pipe once its reader has opened it, and close it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:  # ENXIO: nobody reads it yet
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def state_of(http: httpx.Client, model: str) -> str:
    states = {m["id"]: str(m["state"]) for m in http.get("/v1/models").json()["data"]}
    return states[model]


def complete(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 1})


def test_the_server_listens_while_a_model_loads(tmp_path: Path) -> None:
    """A model whose file is a named pipe loads until the test writes into it: until
    then /health is 200 and /health/ready 503 naming it; a request for it waits for
    the load while the loaded model serves. Then its load fails, the waiting request
    gets a 503 naming why, and only that model is affected."""
    fifo = tmp_path / "slow.gguf"
    os.mkfifo(fifo)
    models = models_file(tmp_path, f'[models.slow]\npath = "{fifo}"\n')
    with (
        serve(tmp_path / "log", ("qwen", "slow"), models, wait_for=("qwen",)) as base,
        httpx.Client(base_url=base, timeout=60) as http,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        waiting = None
        try:
            assert http.get("/health").status_code == 200
            ready = http.get("/health/ready")
            assert ready.status_code == 503
            assert "loading: slow" in ready.json()["error"]["message"]
            waiting = pool.submit(complete, http, "slow")
            assert state_of(http, "slow") == "loading"
            assert complete(http, "qwen").status_code == 200
            assert not waiting.done()
        finally:
            feed_when_read(fifo, b"NOPE")
        assert waiting is not None
        refused = waiting.result(timeout=60)
        assert refused.status_code == 503, refused.text
        assert "not a GGUF file" in refused.json()["error"]["message"]
        assert state_of(http, "slow") == "failed"
        ready = http.get("/health/ready")
        assert ready.status_code == 503 and "not a GGUF file" in ready.json()["error"]["message"]
        assert complete(http, "qwen").status_code == 200
        assert http.get("/health").status_code == 200


def test_sigterm_during_a_load_does_not_wait_for_it(tmp_path: Path) -> None:
    """A model still loading (a named pipe nobody writes) does not hold the exit."""
    fifo = tmp_path / "slow.gguf"
    os.mkfifo(fifo)
    models = models_file(tmp_path, f'[models.slow]\npath = "{fifo}"\n')
    procs: list[subprocess.Popen[bytes]] = []
    with serve(tmp_path / "log", ("slow",), models, wait_for=(), procs=procs) as base:
        assert httpx.get(f"{base}/health/ready").json()["error"]["message"].endswith("slow")
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(25) == 0  # not the 30 s an engine's stop gives its thread
