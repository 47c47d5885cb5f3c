"""Claude Code itself, headless (``claude -p``), against a real server and the default
model. scripts/test installs it from npm into the cache; its home and config live in
the test's own folder, and it is kept off the network. ``--bare`` with a short system
prompt and no tools keeps each turn small: Claude Code's full prompt is some 20,000
tokens, minutes on a 2-core machine (docs/benchmarks.md measures that one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CLIENTS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hearth" / "clients"
CLAUDE = CLIENTS / "node_modules" / ".bin" / "claude"


def claude(
    base_url: str,
    home: Path,
    prompt: str,
    *extra: str,
    model: str = "default",
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One headless turn; its stream-json events. ``env`` adds to Claude Code's."""
    if shutil.which("node") is None:
        pytest.skip("Claude Code needs Node.js, which this machine lacks")
    assert CLAUDE.exists(), f"{CLAUDE} is missing: scripts/test installs it with npm"
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": "unused",
        "ANTHROPIC_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        **(env or {}),
    }  # fmt: skip
    command = [str(CLAUDE), "-p", "--bare", "--tools", "", "--output-format", "stream-json",
               "--verbose", "--system-prompt", "You are terse.", *extra, prompt]  # fmt: skip
    work = home / "work"
    work.mkdir(exist_ok=True)
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def result(events: list[dict[str, Any]]) -> dict[str, Any]:
    (last,) = [e for e in events if e["type"] == "result"]
    assert last["subtype"] == "success" and not last["is_error"], last
    return last


def test_claude_code_answers_and_its_next_turn_reuses_the_prefix(
    base_url: str, tmp_path: Path
) -> None:
    first = claude(base_url, tmp_path, "Name one fruit, in one word.")
    said = [b["text"] for e in first if e["type"] == "assistant"
            for b in e["message"]["content"] if b["type"] == "text"]  # fmt: skip
    answer = result(first)
    assert "".join(said).strip() and answer["result"].strip() == "".join(said).strip()
    assert answer["usage"]["input_tokens"] + answer["usage"]["cache_read_input_tokens"] > 20
    session = answer["session_id"]
    second = result(claude(base_url, tmp_path, "And one vegetable?", "--resume", session))
    assert second["session_id"] == session
    # The system prompt and the first turn come from the first turn's KV.
    assert second["usage"]["cache_read_input_tokens"] > 20
