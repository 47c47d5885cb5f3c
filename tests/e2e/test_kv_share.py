"""Requests without max_tokens share the KV budget: a full slot count runs at once."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import serve
from tests.e2e.test_batching import metric
from tests.e2e.test_lifecycle import qwen_path

pytestmark = pytest.mark.e2e

# Asked for in full, prompt + 128 tokens each: one request at a time in 320 tokens;
# elastic, each holds its share of 80 (the prompt, 34, plus 46).
MODELS = """
[models.qwen]
path = "{path}"
context_length = 320
max_sequences = 4
default_max_tokens = 128
"""


def ask(base: str, text: str) -> dict[str, Any]:
    body = {"model": "qwen", "ignore_eos": True, "messages": [{"role": "user", "content": text}]}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    return {"finish": choice["finish_reason"], **reply.json()["usage"]}


def test_requests_without_max_tokens_all_run_and_one_alone_gets_its_default(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(MODELS.format(path=qwen_path()))
    with serve(tmp_path / "log", ("qwen",), models) as base, httpx.Client(base_url=base) as http:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda i: ask(base, f"Count to {i}."), range(4)))
        assert metric(http, "hearth_step_sequences_max", model="qwen") == 4
        # Each got at least its share; they could not all grow to 128 (4 x 162 > 320),
        # so some were cut, with "length" (one may grow into what the cut ones freed).
        assert all(r["finish"] == "length" for r in replies)
        assert all(r["prompt_tokens"] + r["completion_tokens"] > 80 for r in replies)
        assert min(r["completion_tokens"] for r in replies) < 128
        alone = ask(base, "Count to 9.")
        assert alone == {**alone, "finish": "length", "completion_tokens": 128}
