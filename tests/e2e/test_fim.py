"""Fill in the middle on the real model: /v1/completions with a suffix, /infill as
llama.vscode sends it, and an interactive request overtaking a long prefill."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import httpx
import openai
import pytest

from tests.e2e.conftest import Tokenize
from tests.e2e.test_batching import metric

pytestmark = pytest.mark.e2e

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\n\nprint(add(2, 3))\n"


def test_completion_with_suffix_fills_the_middle(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="default", prompt=PREFIX, suffix=SUFFIX, temperature=0, max_tokens=16
    )
    assert re.match(r"\s*a\s*\+\s*b", r.choices[0].text), r.choices[0].text
    assert r.usage is not None and 0 < r.usage.completion_tokens <= 16


def test_infill_as_llama_vscode_sends_it(http: httpx.Client) -> None:
    body = {
        "input_prefix": "import math\n\n\ndef circle_area(r):\n    return ",
        "input_suffix": "\n",
        "input_extra": [{"filename": "geometry/consts.py", "text": "PI = 3.14159\n"}],
        "prompt": "",
        "n_predict": 16,
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "temperature": 0,
    }
    r = http.post("/infill", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert re.search(r"math\.pi|PI", data["content"]), data["content"]
    assert data["stop"] is True and data["stop_type"] in ("eos", "limit")
    assert 0 < data["tokens_predicted"] <= 16
    assert data["timings"]["predicted_n"] == data["tokens_predicted"]


def test_infill_on_a_model_without_fim_tokens_is_400(http: httpx.Client) -> None:
    body = {"model": "gemma-3-270m", "input_prefix": "a", "input_suffix": "b"}
    r = http.post("/infill", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "fim_not_supported"


def test_infill_overtakes_a_long_prefill(
    base_url: str, http: httpx.Client, tokenize: Tokenize
) -> None:
    """While an 8,000-token prompt prefills, an /infill request gets its first token
    (and its whole answer) before that prompt gets its one token; the long request is
    then dropped by its client rather than waited for (minutes on a small CPU)."""
    unique = uuid.uuid4().hex  # no cached prefix from an earlier run
    long_prompt = f"# {unique}\n" + "".join(f"value_{i} = {i} * 7\n" for i in range(800))
    assert len(tokenize(long_prompt)) >= 8000
    body = {"model": "default", "prompt": long_prompt, "max_tokens": 1, "stream": True}
    command = ["curl", "--silent", "-N", f"{base_url}/v1/completions"]
    command += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as long:
        try:
            assert long.stdin is not None
            long.stdin.write(json.dumps(body).encode())
            long.stdin.close()
            deadline = time.monotonic() + 30
            while metric(http, "hearth_requests_running", model="qwen2.5-coder-0.5b") < 1:
                assert time.monotonic() < deadline, "the long prompt never started"
                time.sleep(0.1)
            infill = {"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 4, "stream": True}
            with http.stream("POST", "/infill", json=infill) as r:
                events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: ")]
            assert events[-1]["stop"] is True and events[-1]["tokens_predicted"] > 0
            assert long.poll() is None, "the long prompt got its token first"
        finally:
            long.kill()
