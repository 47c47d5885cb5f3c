"""Models on demand with the real models and runner processes, under a memory budget
that holds one of them at a time."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from server.engine.residency import footprint
from tests.e2e.conftest import HEARTH, MODELS_FILE, serve

pytestmark = pytest.mark.e2e

MODELS = load_models_file(MODELS_FILE, default_cache_dir()).models


def state(base: str) -> dict[str, dict[str, object]]:
    return {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=10).json()["data"]}


def metric(base: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$",
                      httpx.get(f"{base}/metrics", timeout=10).text, re.M)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def ask(base: str, model: str, max_tokens: int = 4) -> httpx.Response:
    body = {"model": model, "max_tokens": max_tokens, "prompt": "def add(a, b):"}
    return httpx.post(f"{base}/v1/completions", json=body, timeout=300)


def alive(pid: object) -> bool:
    assert isinstance(pid, int)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def swapping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("on-demand")
    qwen, gemma = MODELS["qwen2.5-coder-0.5b"], MODELS["gemma-3-270m"]
    qwen = dataclasses.replace(qwen, context_length=4096)
    gemma = dataclasses.replace(gemma, context_length=4096)
    budget = max(footprint(qwen), footprint(gemma)) + 64 * 2**20  # one at a time
    (folder / "models.toml").write_text(
        f'default = "qwen"\n[models.qwen]\npath = "{qwen.path}"\ncontext_length = 4096\n'
        f'[models.gemma]\npath = "{gemma.path}"\ncontext_length = 4096\n'
        f'[models.brief]\npath = "{gemma.path}"\ncontext_length = 4096\nkeep_alive = 0\n'
    )
    env = {"HEARTH_MEMORY_BUDGET": str(budget), "HEARTH_KEEP_ALIVE": "-1"}
    with serve(folder / "s.log", ("qwen",), folder / "models.toml", env=env) as base:
        yield base


def test_alternating_requests_are_all_served_one_model_at_a_time(swapping: str) -> None:
    base = swapping
    first_qwen = state(base)["qwen"]["runner_pid"]
    for model in ("gemma", "qwen", "gemma", "qwen"):
        r = ask(base, model)
        assert r.status_code == 200, r.text
        loaded = [name for name, m in state(base).items() if m["loaded"]]
        assert loaded == [model]
    assert not alive(first_qwen)  # an unloaded model's runner is gone, and its memory
    assert metric(base, "hearth_model_unloads_total", model="qwen", reason="memory") >= 2


def test_a_stream_on_one_model_is_never_cut_for_another(swapping: str) -> None:
    base = swapping
    assert ask(base, "qwen").status_code == 200
    body = {"model": "qwen", "max_tokens": 150, "ignore_eos": True, "stream": True,
            "prompt": "Count:"}  # fmt: skip
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=300) as resp:
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        refused = ask(base, "gemma")  # qwen is serving: gemma cannot have its memory
        assert refused.status_code == 503 and "qwen" in refused.json()["error"]["message"]
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest)


def test_eight_requests_for_an_unloaded_model_cause_one_load(swapping: str) -> None:
    base = swapping
    assert ask(base, "qwen").status_code == 200  # gemma is not loaded now
    loads = metric(base, "hearth_model_loads_total", model="gemma")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [r.status_code for r in pool.map(lambda _: ask(base, "gemma"), range(8))]
    assert codes == [200] * 8
    assert metric(base, "hearth_model_loads_total", model="gemma") == loads + 1


def test_a_stream_for_an_unloaded_model_waits_in_the_stream(swapping: str) -> None:
    """The stream starts while the model loads and is whole: chunked, no Content-Length,
    text and [DONE]. An unknown model streamed is a plain 404, not a started stream."""
    base = swapping
    assert ask(base, "qwen").status_code == 200  # gemma is not loaded now
    body = {"model": "gemma", "max_tokens": 8, "prompt": "def add(a, b):", "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=300) as resp:
        assert resp.status_code == 200
        assert "content-length" not in resp.headers
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1])
    unknown = httpx.post(f"{base}/v1/completions", json={**body, "model": "../x"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_keep_alive_zero_ends_the_runner_after_the_request(swapping: str) -> None:
    base = swapping
    assert ask(base, "brief").status_code == 200
    deadline = time.monotonic() + 30
    while state(base)["brief"]["state"] != "not_loaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state(base)["brief"]["state"] == "not_loaded"
    assert metric(base, "hearth_model_unloads_total", model="brief", reason="idle") >= 1


def test_hearth_ps_lists_what_is_loaded(swapping: str) -> None:
    assert ask(swapping, "qwen").status_code == 200
    done = subprocess.run([str(HEARTH), "ps", "--url", swapping], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "TASK", "STATE", "MEMORY"]
    assert [row.split()[:3] for row in rows] == [["qwen", "generate", "ready"]]
    assert "GiB" in rows[0]
    full = subprocess.run([str(HEARTH), "ps", "--all", "--url", swapping], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert "gemma" in full.stdout and "not_loaded" in full.stdout
