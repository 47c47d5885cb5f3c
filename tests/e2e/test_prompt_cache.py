"""The prompt cache's disk tier with the real default model: a prompt prefilled by one
server process is not prefilled again by the next one, and the answer computed from
the restored state is still the model's greedy choice at every token."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from server.cli.pull import default_cache_dir
from server.config import load_models_file
from tests.e2e.conftest import HEARTH, MODELS_FILE, serve
from tests.e2e.test_prefix_reuse import TOLERANCE, lines, worst_gap
from tests.solo_llama import solo_llama

pytestmark = pytest.mark.e2e

QWEN = load_models_file(MODELS_FILE, default_cache_dir()).models["qwen2.5-coder-0.5b"].path


def complete(base: str, prompt: str) -> dict[str, object]:
    body = {"model": "qwen", "prompt": prompt, "max_tokens": 12, "temperature": 0}
    resp = httpx.post(f"{base}/v1/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    reply: dict[str, object] = resp.json()
    return reply


def test_a_restarted_server_starts_from_the_saved_prompt(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(
        f'[models.qwen]\npath = "{QWEN}"\ncontext_length = 8192\nmax_sequences = 2\n'
    )
    cache = tmp_path / "prompt-cache"
    env = {"HEARTH_PROMPT_CACHE_DIR": str(cache)}
    shared = "A ledger of crates.\n" + lines(0, 70)  # ~1,500 tokens
    with serve(tmp_path / "one.log", ("qwen",), tmp_path / "models.toml", env=env) as base:
        first = complete(base, shared + "Question one: which crate is last? Answer:")
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # type: ignore[index]
        deadline = time.monotonic() + 60  # written to disk on a thread of its own
        while not list(cache.glob("*/*.kv")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(cache.glob("*/*.kv"))
    prompt = shared + "Question two: which crate holds the most? Answer:"
    with serve(tmp_path / "two.log", ("qwen",), tmp_path / "models.toml", env=env) as base:
        reply = complete(base, prompt)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
    assert cached >= 1024, cached  # whole blocks of the shared ledger, from disk
    assert 'hearth_prompt_cache_disk_hits{model="qwen"} 1' in metrics
    scorer = solo_llama(model_path=str(QWEN), n_ctx=4096, n_threads=2, logits_all=True,
                        verbose=False)  # fmt: skip
    text = str(reply["choices"][0]["text"])  # type: ignore[index]
    gap = worst_gap(scorer, prompt, text)
    assert gap < TOLERANCE, f"a token was {gap:.3f} logits below the solo argmax"
    listed = subprocess.run([str(HEARTH), "cache", "ls"], env={**os.environ, **env},
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "saved prompt(s)" in listed and "MiB" in listed
    subprocess.run([str(HEARTH), "cache", "clear"], env={**os.environ, **env}, check=True,
                   capture_output=True)  # fmt: skip
    assert not list(cache.glob("*/*.kv"))
