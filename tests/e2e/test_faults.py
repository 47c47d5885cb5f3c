"""Broken model files fail alone: each is refused at load with a clear error in
/v1/models, the process stays up and the good model serves.

Elsewhere: a client leaving mid-stream frees its sequence
(tests/e2e/test_batching.py::test_disconnect_frees_the_sequence); an engine raising
mid-batch fails that batch and serves the next (tests/unit/test_engine.py).
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import MODELS_FILE, serve

pytestmark = pytest.mark.e2e

BROKEN = ("truncated", "wrong-magic", "huge-tensor-count")


def write_broken_models(folder: Path, good: Path) -> None:
    with good.open("rb") as f:
        (folder / "truncated.gguf").write_bytes(f.read(1024 * 1024))
    (folder / "wrong-magic.gguf").write_bytes(b"GGML" + b"\0" * 4096)
    # magic, version 3, tensor_count 2**60, kv_count 0, and nothing else
    header = b"GGUF" + struct.pack("<IQQ", 3, 2**60, 0)
    (folder / "huge-tensor-count.gguf").write_bytes(header)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    folder = tmp_path_factory.mktemp("faults")
    good = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path
    write_broken_models(folder, good)
    lines = [f'default = "good"\n[models.good]\npath = "{good}"\ncontext_length = 2048\n']
    for name in BROKEN:
        lines.append(f'[models.{name}]\npath = "{folder / name}.gguf"\ncontext_length = 512\n')
    models = folder / "models.toml"
    models.write_text("".join(lines))
    procs: list[subprocess.Popen[bytes]] = []
    names = ("good", *BROKEN)
    with serve(folder / "server.log", names, models, wait_for=("good",), procs=procs) as base:
        yield base, procs


def _states(base: str) -> dict[str, dict[str, object]]:
    data = httpx.get(f"{base}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m for m in data}


def test_broken_files_fail_alone_and_the_good_model_serves(
    server: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    base, procs = server
    states = _states(base)
    for name in BROKEN:
        model = states[name]
        assert model["state"] == "failed", model
        error = str(model["error"])
        assert f"{name}.gguf" in error, model
        assert "not a GGUF file" in error or "could not load" in error, model
    assert states["good"]["loaded"] is True
    assert procs[0].poll() is None
    body = {"model": "good", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    resp = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    for name in BROKEN:
        refused = httpx.post(
            f"{base}/v1/chat/completions", json={**body, "model": name}, timeout=10
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "model_unavailable"
